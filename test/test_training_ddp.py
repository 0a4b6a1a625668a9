"""DDP under torchrun: 2 gloo processes with batch b train exactly like 1 process with batch 2b
(on cached latents, which both processes encode, half each)."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from vjepa2_ros.data.droid import write_droid_episode
from vjepa2_ros.data.episode import make_example_episode
from vjepa2_ros.training.config import TrainConfig
from vjepa2_ros.training.train import train

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_losses(out_dir: Path) -> np.ndarray:
    with open(out_dir / "log.csv") as f:
        return np.array([float(r["loss"]) for r in csv.DictReader(f)])


def test_two_gloo_processes_match_one_process(tmp_path):
    root = tmp_path / "droid"
    for i in range(3):
        write_droid_episode(root / f"ep{i}", make_example_episode(steps=12, seed=i))
    config = dict(droid=[str(root)], encoder={"preset": "vit_tiny"}, predictor={"preset": "ac_tiny"}, steps=5,
                  batch_size=2, lr=1e-3, lr_start=1e-4, warmup_steps=2, anneal_steps=1, log_every=1,
                  tensorboard=False, seed=0, out_dir=str(tmp_path / "ddp"), cache_latents=True, cache_dtype="float32")
    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "vjepa2_ros.cli", "train", str(cfg_path), "--no-progress"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    ddp = read_losses(tmp_path / "ddp")

    single = TrainConfig.from_dict({**config, "batch_size": 4, "out_dir": str(tmp_path / "single")})
    one = np.array([r["loss"] for r in train(single, progress=False).rows])
    assert len(ddp) == len(one) == 5
    np.testing.assert_allclose(ddp, one, atol=1e-4, rtol=0)
    assert not np.allclose(one[0], one[-1])                     # it trained
    assert len(list((tmp_path / "ddp" / "latents").glob("*.latents.npy"))) == 3
