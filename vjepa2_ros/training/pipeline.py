"""`vjepa2-ros pipeline CONFIG`: [record ->] train -> export (ONNX + manifests) -> build-engines
[-> ship], in one command.

Each stage is skipped when its outputs are newer than its inputs and their manifests match:
- record (when the config has `sim_record`): each droid folder is recorded in the simulator
  unless its sim_record.json says it holds exactly that recording; the folders are recorded
  side by side, one process each (at most one per CPU core).
- train: out_dir/checkpoint.safetensors reached `steps` with the same config and is newer than
  the config's data, encoder checkpoint and init checkpoint. A checkpoint of the same config
  that stopped early is resumed; one of another config is retrained from the start.
- export: every graph exists, its files match their manifest, the manifest names the trained
  weights (sha256), the model config, precision and steps, and it is newer than the weights.
- build-engines: skipped, saying why, on hosts without TensorRT or a GPU; otherwise an engine is
  rebuilt when it is missing or was built from another ONNX graph.
- ship (when the config has `ship_dir`): predictor.safetensors, encoder.safetensors, a model
  card (model.json: the two networks' configs, sha256 of the files, the training config and its
  last logged losses) and the training curves (training.png) are written there unless the
  weights there are the same.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from vjepa2_ros.errors import CheckpointError, ConfigError, EngineError
from vjepa2_ros.model.card import MODEL_CARD, read_model_card, write_model_card
from vjepa2_ros.model.checkpoint import load_official_checkpoint, sha256_file
from vjepa2_ros.model.encoder import VJEPA2Encoder
from vjepa2_ros.model.predictor import ACPredictor
from vjepa2_ros.training.config import TrainConfig
from vjepa2_ros.training.train import CHECKPOINT, ENCODER_WEIGHTS, WEIGHTS, config_from_args, train

# Fields that do not change what a finished run produced.
RUN_ONLY_FIELDS = ("out_dir", "log_every", "ckpt_every", "num_workers", "tensorboard", "cache_dir", "sim_record",
                   "ship_dir")
TRAINING_PLOT = "training.png"


def _newest_input_ns(cfg: TrainConfig) -> int:
    """Latest modification time (ns) of anything the training run reads."""
    paths: list[Path] = [Path(p) for p in (*cfg.droid, *cfg.bags)]
    paths += [Path(p) for p in (cfg.encoder_checkpoint, cfg.init_from) if p and p not in ("scratch", "resume")]
    newest = 0
    for p in paths:
        for f in ([p] + list(p.rglob("*")) if p.is_dir() else [p]):
            if f.exists():
                newest = max(newest, f.stat().st_mtime_ns)
    return newest


def _run_fields(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in d.items() if k not in RUN_ONLY_FIELDS}))


def encoder_file(cfg: TrainConfig) -> Path:
    """The run's frozen encoder weights: the configured file, else the seeded random encoder
    `train` saved beside the predictor."""
    path = Path(cfg.encoder_checkpoint) if cfg.encoder_checkpoint is not None else Path(cfg.out_dir) / ENCODER_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: the train stage did not finish")
    return path


def _record(job: dict[str, Any], position: int, progress: bool) -> str:
    from vjepa2_ros.data.generate import generate_episodes
    generate_episodes(job["out"], job["count"], job["steps"], job["seed"], job["step_s"], tuple(job["size"]),
                      record_hz=job["record_hz"], progress=progress, progress_position=position)
    return job["out"]


def record_stage(cfg: TrainConfig, progress: bool) -> str:
    """Record the sim episodes the config's droid folders should hold, or skip."""
    from vjepa2_ros.data.generate import RECORD_MARKER
    if cfg.sim_record is None:
        return "record: nothing to record (no sim_record in the config)"
    todo = []
    for job in cfg.sim_record_jobs():
        folder, params = Path(job["out"]), {k: v for k, v in job.items() if k != "out"}
        marker = folder / RECORD_MARKER
        if marker.is_file():
            if json.loads(marker.read_text()) == params:
                continue
            print(f"pipeline: {folder} holds another recording ({marker.read_text().strip()}); recording again")
            shutil.rmtree(folder)                   # a folder this stage (or `sim record`) wrote
        elif folder.exists() and any(folder.iterdir()):
            raise ConfigError(f"{folder} is not empty and has no {RECORD_MARKER}: it was not recorded by "
                              f"`vjepa2-ros sim record`; move it away or point droid/sim_record elsewhere")
        todo.append(job)
    if not todo:
        return f"record: up to date ({len(cfg.droid)} folders)"
    workers = max(1, min(len(todo), os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(_record, todo, range(len(todo)), [progress] * len(todo)))
    return f"record: recorded {sum(j['count'] for j in todo)} episodes into {', '.join(done)}"


def train_stage(cfg: TrainConfig, progress: bool) -> str:
    """Train, resume or skip; returns what it did."""
    from safetensors import safe_open
    ckpt = Path(cfg.out_dir) / CHECKPOINT
    if ckpt.is_file():
        with safe_open(str(ckpt), "pt") as f:
            meta = f.metadata() or {}
        same = _run_fields(json.loads(meta.get("config", "{}"))) == _run_fields(cfg.to_dict())
        fresh = ckpt.stat().st_mtime_ns > _newest_input_ns(cfg)
        if same and fresh and int(meta.get("step", -1)) >= cfg.steps:
            return f"train: up to date ({ckpt}, step {meta['step']})"
        if same and fresh:
            train(dataclasses.replace(cfg, init_from="resume"), progress=progress)
            return f"train: resumed from step {meta['step']} to {cfg.steps}"
        why = "the config changed" if not same else "its data or checkpoints are newer"
        print(f"pipeline: {ckpt} is out of date ({why}); training again from {cfg.init_from}")
    train(cfg, progress=progress)
    return f"train: trained {cfg.steps} steps"


def export_stage(cfg: TrainConfig, engine_dir: Path, precision: str, steps: tuple[int, ...], rebuild: str,
                 progress: bool = True) -> str:
    from vjepa2_ros.engines.manifest import Expected, artifact_name, check_manifest, io_specs, read_manifest, weights_id
    from vjepa2_ros.engines.onnx_export import ExportConfig, export_onnx

    weights = Path(cfg.out_dir) / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} does not exist: the train stage did not finish")
    export_cfg = ExportConfig(precision=precision, steps=steps)
    enc_cfg, pred_cfg = cfg.encoder_config(), cfg.predictor_config()
    enc_file = encoder_file(cfg)
    pred_id, enc_id = weights_id(weights), weights_id(enc_file)
    wanted = [("encoder", None, enc_cfg, enc_id)] + [("predictor", t, pred_cfg, pred_id) for t in steps]
    stale = []
    for network, t, model_cfg, wid in wanted:
        path = engine_dir / artifact_name(network, precision, t, "onnx")
        if not path.is_file():
            stale.append(f"{path.name} is missing")
            continue
        try:
            manifest = read_manifest(path)
            check_manifest(manifest, Expected(network, model_cfg.to_dict(), wid, precision, t,
                                              *io_specs(network, model_cfg, precision, t)), path)
        except EngineError as e:
            stale.append(f"{path.name}: {str(e).splitlines()[0]}")
            continue
        if path.stat().st_mtime_ns < weights.stat().st_mtime_ns:
            stale.append(f"{path.name} is older than {weights.name}")
    if not stale:
        return f"export: up to date ({len(wanted)} graphs in {engine_dir})"
    print("pipeline: exporting because " + "; ".join(stale))
    encoder = load_official_checkpoint(enc_file, VJEPA2Encoder(enc_cfg, init=False))
    predictor = load_official_checkpoint(weights, ACPredictor(pred_cfg, init=False))
    paths = export_onnx(encoder.eval(), predictor.eval(), engine_dir, export_cfg, pred_id, encoder_weights=enc_id,
                        rebuild=rebuild, progress=progress)
    return f"export: wrote {len(paths)} graphs to {engine_dir}"


def build_stage(engine_dir: Path, precision: str, steps: tuple[int, ...], samples: tuple[int, int, int],
                batch: tuple[int, int, int], rebuild: str) -> str:
    from vjepa2_ros.engines.manifest import artifact_name, read_manifest
    from vjepa2_ros.engines.trt_build import BuildConfig, build_engine, import_tensorrt
    try:
        import_tensorrt()
    except EngineError as e:
        return f"build-engines: skipped, {e}"
    build_cfg = BuildConfig(samples=samples, batch=batch)
    built, kept = [], []
    for network, t in [("encoder", None)] + [("predictor", t) for t in steps]:
        onnx_path = engine_dir / artifact_name(network, precision, t, "onnx")
        engine = engine_dir / artifact_name(network, precision, t, "tensorrt")
        try:
            m = read_manifest(engine)
            source_sha = read_manifest(onnx_path).files[onnx_path.name]["sha256"]
            up_to_date = (m.source or {}).get("sha256") == source_sha and \
                tuple(m.inputs[0].profile or ()) == (batch if network == "encoder" else samples)
        except EngineError:
            up_to_date = False
        if up_to_date:
            kept.append(engine.name)
        else:
            built.append(build_engine(onnx_path, build_cfg, rebuild=rebuild).name)
    return f"build-engines: built {built or 'none'}, up to date {kept or 'none'}"


def ship_stage(cfg: TrainConfig) -> str:
    """Copy the trained weights and a model card to cfg.ship_dir, or skip."""
    if cfg.ship_dir is None:
        return "ship: nothing to ship (no ship_dir in the config)"
    out_dir, ship = Path(cfg.out_dir), Path(cfg.ship_dir)
    sources = {WEIGHTS: out_dir / WEIGHTS, ENCODER_WEIGHTS: encoder_file(cfg)}
    if not sources[WEIGHTS].is_file():
        raise CheckpointError(f"{sources[WEIGHTS]} does not exist: the train stage did not finish")
    hashes = {name: sha256_file(src) for name, src in sources.items()}
    if (ship / MODEL_CARD).is_file():
        try:
            if read_model_card(ship).sha256 == hashes:       # and the files there are the ones it hashed
                return f"ship: up to date ({ship})"
        except ConfigError:
            pass                                             # a stale or broken card: ship again
    ship.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        shutil.copyfile(src, ship / name)
    with (out_dir / "log.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    training = {"steps": int(last["step"]), "loss": float(last["loss"]), "loss_tf": float(last["loss_tf"]),
                "loss_rollout": float(last["loss_rollout"]), "config": cfg.to_dict()}
    write_model_card(ship, cfg.encoder, cfg.predictor, WEIGHTS, ENCODER_WEIGHTS, training)
    plotted = plot_training_curves(out_dir / "log.csv", ship / TRAINING_PLOT)
    return f"ship: copied {', '.join(sources)}, {MODEL_CARD}{' and ' + TRAINING_PLOT if plotted else ''} to {ship}"


def plot_training_curves(log_csv: Path, png: Path) -> bool:
    """Loss (teacher forcing, rollout) and learning rate against step from train's log.csv; False
    (and a note) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("pipeline: no training plot (pip install matplotlib)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with log_csv.open() as f:
        rows = list(csv.DictReader(f))
    step = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(step, [float(r["loss_tf"]) for r in rows], label="teacher forcing L1")
    ax.plot(step, [float(r["loss_rollout"]) for r in rows], label="rollout L1")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("L1 (per latent element)")
    ax.grid(alpha=0.3)
    lr = ax.twinx()
    lr.plot(step, [float(r["lr"]) for r in rows], color="0.6", linewidth=1, label="learning rate")
    lr.set_ylabel("learning rate")
    handles = ax.get_legend_handles_labels()[0] + lr.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vjepa2_ros.training.train import add_arguments as train_arguments
    train_arguments(parser)
    parser.add_argument("--engine-dir", help="where ONNX graphs and engines go (default: <out_dir>/engines)")
    parser.add_argument("--precision", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--predictor-steps", type=int, nargs="+", default=[1, 2],
                        help="predictor graphs to export, one per number of time steps T")
    parser.add_argument("--samples", type=int, nargs=3, default=[1, 256, 800], metavar=("MIN", "OPT", "MAX"),
                        help="TensorRT profile of the predictor's samples axis")
    parser.add_argument("--batch", type=int, nargs=3, default=[1, 1, 8], metavar=("MIN", "OPT", "MAX"),
                        help="TensorRT profile of the encoder's batch axis")


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    engine_dir = Path(args.engine_dir) if args.engine_dir else Path(cfg.out_dir) / "engines"
    steps = tuple(args.predictor_steps)
    rebuild = f"vjepa2-ros pipeline {args.config}" + (f" --out-dir {args.out_dir}" if args.out_dir else "")
    print(record_stage(cfg, progress=not args.no_progress))
    print(train_stage(cfg, progress=not args.no_progress))
    print(export_stage(cfg, engine_dir, args.precision, steps, rebuild, progress=not args.no_progress))
    print(build_stage(engine_dir, args.precision, steps, tuple(args.samples), tuple(args.batch), rebuild))
    print(ship_stage(cfg))
    return 0
