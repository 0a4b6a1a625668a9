"""The `export`, `build-engines` and `bench engines` commands, run for real on the tiny model."""

from __future__ import annotations

import importlib.util
import logging
import shlex

import pytest
import torch

from vjepa2_ros.cli import main as cli
from vjepa2_ros.engines.bench import BenchConfig, run, table
from vjepa2_ros.engines.factory import RuntimeConfig, open_runtime
from vjepa2_ros.engines.manifest import read_manifest, sha256_file
from vjepa2_ros.errors import ConfigError, EngineError
from vjepa2_ros.model import EncoderConfig, PredictorConfig, build_model
from vjepa2_ros.model.factory import check_random_weights


def test_export_writes_graphs_whose_manifest_command_rebuilds_them(tmp_path, capsys):
    out = tmp_path / "engines"
    assert cli(["export", "--random", "--encoder", "vit_tiny", "--predictor", "ac_tiny", "--out", str(out),
                "--steps", "1", "2"]) == 0
    assert "exported   3 graphs" in capsys.readouterr().out
    graphs = sorted(out.glob("*.onnx"))
    assert [p.name for p in graphs] == ["encoder-float32.onnx", "predictor-T1-float32.onnx",
                                        "predictor-T2-float32.onnx"]
    digests = {p.name: sha256_file(p) for p in graphs}
    manifest = read_manifest(out / "predictor-T2-float32.onnx")
    assert manifest.weights == "random:seed=0"
    words = shlex.split(manifest.rebuild)
    assert words[:2] == ["vjepa2-ros", "export"]
    for p in graphs:
        p.unlink()
    assert cli(words[1:]) == 0                                           # the stored command, run again
    assert {p.name: sha256_file(p) for p in sorted(out.glob("*.onnx"))} == digests

    # The graphs compute the seeded random model.
    encoder, predictor = build_model(EncoderConfig.tiny(), PredictorConfig.tiny(), seed=0)
    rt = open_runtime(RuntimeConfig(kind="onnxruntime", engine_dir=str(out), encoder_cfg=EncoderConfig.tiny()))
    z, a, s = torch.randn(5, 32, 64), torch.randn(5, 2, 7), torch.randn(5, 2, 7)
    with torch.no_grad():
        torch.testing.assert_close(rt.predict(z, a, s), predictor(z, a, s), atol=1e-4, rtol=0)


def test_random_large_networks_are_refused_small_ones_are_announced(caplog):
    """No checkpoint: a random ViT-g + AC predictor is refused (naming the three ways to give weights)
    wherever a runtime is opened (node, demo, bench, replay); the project's small models only warn."""
    with pytest.raises(ConfigError, match=r"1,317 M randomly initialised parameters.*--checkpoint.*--model-card.*"
                                          r"engine_dir"):
        open_runtime(RuntimeConfig())
    with pytest.raises(ConfigError, match="305 M randomly initialised"):     # encoder file, predictor random
        open_runtime(RuntimeConfig(encoder_checkpoint="encoder.safetensors"))
    assert check_random_weights(EncoderConfig.vit_giant(), PredictorConfig.ac_vit_giant(), "ac.pt", None) == 0
    with caplog.at_level(logging.WARNING, logger="vjepa2_ros.model.factory"):
        runtime = open_runtime(RuntimeConfig(encoder_cfg=EncoderConfig.tiny(), predictor_cfg=PredictorConfig.tiny()))
    assert runtime is not None and "randomly initialised networks" in caplog.text


def test_export_needs_weights_or_an_explicit_random(tmp_path, capsys):
    assert cli(["export", "--out", str(tmp_path)]) == 1
    assert "give --checkpoint" in capsys.readouterr().err


needs_no_trt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")


@needs_no_trt
def test_without_tensorrt_the_error_says_how_to_install_it(tmp_path, capsys):
    assert cli(["build-engines", "--engine-dir", str(tmp_path)]) == 1
    assert "TensorRT is not installed: install it on a GPU host" in capsys.readouterr().err
    with pytest.raises(EngineError, match="pip install tensorrt"):
        open_runtime(RuntimeConfig(kind="tensorrt", device="cuda", engine_dir=str(tmp_path)))


def test_bench_measures_each_available_runtime_against_torch_eager():
    cfg = BenchConfig(samples=(1, 8), repeats=2, warmup=1)
    messages = []
    rows = run(cfg, progress=messages.append)
    by = {(r.runtime, r.call): r for r in rows}
    calls = ["encode B=1", "predict S=1 T=1", "predict S=8 T=1"]
    assert all(by[("torch", c)].speedup == pytest.approx(1.0) for c in calls)
    assert all(by[("onnxruntime", c)].median_ms > 0 and by[("onnxruntime", c)].speedup > 0 for c in calls)
    if not torch.cuda.is_available():
        assert any(m.startswith("skipped    tensorrt") for m in messages)
    text = table(rows, cfg)
    assert "vs torch eager" in text and "onnxruntime      predict S=8 T=1" in text


def test_engine_modules_import_neither_tensorrt_nor_onnxruntime():
    import subprocess
    import sys
    modules = ["bench", "build", "export", "factory", "manifest", "onnx_export", "ort_runtime", "torch_runtime",
               "trt_build", "trt_runtime"]
    code = ("import sys\n" + "".join(f"import vjepa2_ros.engines.{m}\n" for m in modules)
            + "print(sorted(m for m in ('tensorrt', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
