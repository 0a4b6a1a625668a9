"""GPU paths: torch CUDA graphs / compile, ONNX Runtime CUDA, TensorRT. Skip without a GPU or tensorrt."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES, load_fixture
from vjepa2_ros.engines.factory import RuntimeConfig, open_runtime
from vjepa2_ros.engines.manifest import manifest_path, read_manifest, weights_id
from vjepa2_ros.engines.onnx_export import ExportConfig, export_onnx
from vjepa2_ros.errors import EngineError
from vjepa2_ros.model import EncoderConfig, PredictorConfig, build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ENC_CFG = EncoderConfig(img_size=64, num_frames=4, embed_dim=64, depth=2, num_heads=4)
PRED_CFG = PredictorConfig(img_size=64, num_frames=8, embed_dim=64, predictor_embed_dim=64, depth=2, num_heads=4)
AC_FILE = FIXTURES / "ac_predictor_tiny_weights.safetensors"
ENC_FILE = FIXTURES / "encoder_tiny_weights.safetensors"


def torch_cfg(**overrides) -> RuntimeConfig:
    base = dict(kind="torch", device="cuda", checkpoint=str(AC_FILE), encoder_checkpoint=str(ENC_FILE),
                encoder_cfg=ENC_CFG, predictor_cfg=PRED_CFG)
    return RuntimeConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu_engines")
    models = build_model(ENC_CFG, PRED_CFG, checkpoint=AC_FILE, encoder_checkpoint=ENC_FILE)
    export_onnx(*models, out, ExportConfig(steps=(1, 3)), weights_id(AC_FILE), weights_id(ENC_FILE))
    return out


@pytest.fixture(scope="module")
def fixture_io() -> dict:
    return {k: v.cuda() for k, v in load_fixture("ac_predictor_tiny_io.safetensors").items()}


def test_cuda_graph_replay_equals_eager_for_new_inputs(fixture_io):
    eager, graphed = open_runtime(torch_cfg()), open_runtime(torch_cfg(cuda_graphs=True))
    z, a, s = fixture_io["z_in"], fixture_io["actions_in"], fixture_io["states_in"]
    torch.testing.assert_close(graphed.predict(z, a, s), fixture_io["out_heads4"], atol=1e-4, rtol=1e-4)
    z2, a2 = z.flip(0) * 0.5, a + 0.1                                 # same shapes: replays the captured graph
    torch.testing.assert_close(graphed.predict(z2, a2, s), eager.predict(z2, a2, s), atol=1e-5, rtol=1e-5)
    assert graphed.describe()["captured_shapes"] == [[2, 48, 64]]


def test_torch_compile_equals_eager(fixture_io):
    rt = open_runtime(torch_cfg(compile=True))
    torch.testing.assert_close(rt.predict(fixture_io["z_in"], fixture_io["actions_in"], fixture_io["states_in"]),
                               fixture_io["out_heads4"], atol=1e-4, rtol=1e-4)


def test_onnxruntime_cuda_equals_fixture(engine_dir, fixture_io):
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without the CUDA provider (install onnxruntime-gpu)")
    rt = open_runtime(RuntimeConfig(kind="onnxruntime", device="cuda", engine_dir=str(engine_dir)))
    out = rt.predict(fixture_io["z_in"], fixture_io["actions_in"], fixture_io["states_in"])
    assert out.is_cuda
    torch.testing.assert_close(out, fixture_io["out_heads4"], atol=1e-4, rtol=1e-4)


needs_trt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs tensorrt")


@pytest.fixture(scope="module")
def trt_dir(engine_dir) -> Path:
    from vjepa2_ros.engines.trt_build import BuildConfig, build_engine
    for graph in sorted(engine_dir.glob("*-float32.onnx")):
        build_engine(graph, BuildConfig(samples=(1, 8, 64), batch=(1, 1, 4), workspace_gib=1.0))
    return engine_dir


@needs_trt
def test_tensorrt_equals_fixture_and_torch(trt_dir, fixture_io):
    rt = open_runtime(RuntimeConfig(kind="tensorrt", device="cuda", engine_dir=str(trt_dir),
                                    checkpoint=str(AC_FILE), encoder_checkpoint=str(ENC_FILE)))
    out = rt.predict(fixture_io["z_in"], fixture_io["actions_in"], fixture_io["states_in"])
    torch.testing.assert_close(out, fixture_io["out_heads4"], atol=1e-4, rtol=1e-4)
    eager = open_runtime(torch_cfg())
    for samples in (1, 7, 64):
        z, a, s = torch.randn(samples, 48, 64, device="cuda"), torch.randn(samples, 3, 7, device="cuda"), \
            torch.randn(samples, 3, 7, device="cuda")
        torch.testing.assert_close(rt.predict(z, a, s), eager.predict(z, a, s), atol=1e-4, rtol=0)
    images = torch.randn(3, 3, 64, 64, device="cuda")
    torch.testing.assert_close(rt.encode(images), eager.encode(images), atol=1e-4, rtol=0)
    with pytest.raises(EngineError, match="built for 1..64 rows"):
        rt.predict(torch.zeros(65, 48, 64, device="cuda"), torch.zeros(65, 3, 7, device="cuda"),
                   torch.zeros(65, 3, 7, device="cuda"))


@needs_trt
def test_tensorrt_manifest_records_the_gpu_and_refuses_another(trt_dir, tmp_path):
    import shutil
    m = read_manifest(trt_dir / "predictor-T3-float32.engine")
    assert m.format == "tensorrt" and m.gpu["name"] == torch.cuda.get_device_name()
    assert m.inputs[0].profile == (1, 8, 64) and m.source["file"] == "predictor-T3-float32.onnx"
    copy = Path(shutil.copytree(trt_dir, tmp_path / "engines"))
    path = manifest_path(copy / "predictor-T1-float32.engine")
    d = json.loads(path.read_text())
    d["gpu"] = {"name": "NVIDIA Jetson Orin", "compute_capability": "8.7"}
    path.write_text(json.dumps(d))
    with pytest.raises(EngineError, match=r"(?s)GPU: file built for .*Orin.*rebuild it with: vjepa2-ros build-engines"):
        open_runtime(RuntimeConfig(kind="tensorrt", device="cuda", engine_dir=str(copy)))
    path = manifest_path(copy / "encoder-float32.engine")
    d = json.loads(path.read_text())
    d["tools"]["tensorrt"] = "9.0.0"
    path.write_text(json.dumps(d))
    with pytest.raises(EngineError, match="tensorrt version: file built with '9.0.0'"):
        open_runtime(RuntimeConfig(kind="tensorrt", device="cuda", engine_dir=str(copy)))
