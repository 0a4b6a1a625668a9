"""ONNX export and the ONNX Runtime runtime on the CPU, against torch and the official fixtures."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES, load_fixture
from vjepa2_ros.engines.factory import RuntimeConfig, open_runtime
from vjepa2_ros.engines.manifest import manifest_path, read_manifest, sha256_file, weights_id
from vjepa2_ros.engines.onnx_export import MAX_IR_VERSION, ExportConfig, export_onnx
from vjepa2_ros.errors import ConfigError, EngineError
from vjepa2_ros.model import EncoderConfig, PredictorConfig, build_model

ENC_CFG = EncoderConfig(img_size=64, num_frames=4, embed_dim=64, depth=2, num_heads=4)
PRED_CFG = PredictorConfig(img_size=64, num_frames=8, embed_dim=64, predictor_embed_dim=64, depth=2, num_heads=4)
AC_FILE = FIXTURES / "ac_predictor_tiny_weights.safetensors"
ENC_FILE = FIXTURES / "encoder_tiny_weights.safetensors"
STEPS = (1, 2, 3)                # the planner's non-cached rollout of H=3 needs T = 1, 2, 3


def runtime_cfg(engine_dir: Path, **overrides) -> RuntimeConfig:
    base = dict(kind="onnxruntime", engine_dir=str(engine_dir), checkpoint=str(AC_FILE),
                encoder_checkpoint=str(ENC_FILE), encoder_cfg=ENC_CFG, predictor_cfg=PRED_CFG)
    return RuntimeConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def models():
    return build_model(ENC_CFG, PRED_CFG, checkpoint=AC_FILE, encoder_checkpoint=ENC_FILE)


@pytest.fixture(scope="module")
def engine_dir(models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("engines")
    export_onnx(*models, out, ExportConfig(steps=STEPS, step_graphs=True), weights_id(AC_FILE), weights_id(ENC_FILE))
    return out


@pytest.fixture(scope="module")
def runtime(engine_dir):
    return open_runtime(runtime_cfg(engine_dir))


@pytest.fixture()
def scratch_dir(engine_dir, tmp_path) -> Path:
    """A private copy of the exported directory that a test may damage."""
    return Path(shutil.copytree(engine_dir, tmp_path / "engines"))


# -- the exported files ------------------------------------------------------------------------
def test_exported_graphs_pass_the_checker_and_onnxruntime_reads_their_ir(engine_dir):
    import onnx
    import onnxruntime as ort
    names = sorted(p.name for p in engine_dir.glob("*.onnx"))
    assert names == ["encoder-float32.onnx", "predictor-T1-float32.onnx", "predictor-T2-float32.onnx",
                     "predictor-T3-float32.onnx",
                     "predictor-step-T1-float32.onnx", "predictor-step-T2-float32.onnx",
                     "predictor-step-T3-float32.onnx"]
    for name in names:
        model = onnx.load(str(engine_dir / name))
        onnx.checker.check_model(model)
        assert model.ir_version <= MAX_IR_VERSION
        assert {o.domain: o.version for o in model.opset_import}[""] == 18
        ort.InferenceSession(str(engine_dir / name), providers=["CPUExecutionProvider"])
        assert manifest_path(engine_dir / name).is_file()


def test_manifest_records_model_weights_shapes_and_tools(engine_dir):
    m = read_manifest(engine_dir / "predictor-T3-float32.onnx")
    assert (m.format, m.network, m.precision, m.steps) == ("onnx", "predictor", "float32", 3)
    assert m.model == json.loads(json.dumps(PRED_CFG.to_dict()))
    assert m.weights == f"sha256:{sha256_file(AC_FILE)}"
    assert [(t.name, list(t.shape)) for t in m.inputs] == [
        ("z", ["samples", 48, 64]), ("actions", ["samples", 3, 7]), ("states", ["samples", 3, 7])]
    assert [(t.name, list(t.shape)) for t in m.outputs] == [("predictions", ["samples", 48, 64])]
    assert m.tools["onnx"] != "not installed" and m.tools["opset"] == "18"
    assert "vjepa2-ros export" in m.rebuild
    enc = read_manifest(engine_dir / "encoder-float32.onnx")
    assert enc.weights == f"sha256:{sha256_file(ENC_FILE)}"
    assert [list(t.shape) for t in enc.inputs + enc.outputs] == [["batch", 3, 64, 64], ["batch", 16, 64]]


# -- parity -------------------------------------------------------------------------------------
def test_exported_predictor_gives_the_fixture_outputs(runtime):
    io = load_fixture("ac_predictor_tiny_io.safetensors")
    out = runtime.predict(io["z_in"], io["actions_in"], io["states_in"])
    torch.testing.assert_close(out, io["out_heads4"], atol=1e-5, rtol=1e-5)
    out1 = runtime.predict(io["z_in"][:, :16], io["actions_in"][:, :1], io["states_in"][:, :1])
    torch.testing.assert_close(out1, io["out_heads4_T1"], atol=1e-5, rtol=1e-5)


def test_exported_encoder_gives_the_fixture_outputs(runtime):
    io = load_fixture("encoder_tiny_io.safetensors")
    images = io["frames_in"][0].transpose(0, 1)                      # 3 independent frames [3, 3, 64, 64]
    out = runtime.encode(images).reshape(1, 48, 64)
    torch.testing.assert_close(out, io["frames_out_raw_heads4"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("samples", [1, 7, 64])
def test_onnxruntime_equals_torch(runtime, models, samples):
    encoder, predictor = models
    g = torch.Generator().manual_seed(samples)
    z = torch.randn(samples, 3 * 16, 64, generator=g)
    actions, states = torch.randn(samples, 3, 7, generator=g), torch.randn(samples, 3, 7, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(runtime.predict(z, actions, states), predictor(z, actions, states),
                                   atol=1e-4, rtol=0)
        images = torch.randn(min(samples, 8), 3, 64, 64, generator=g)
        torch.testing.assert_close(runtime.encode(images), encoder(images), atol=1e-4, rtol=0)


def test_step_graphs_equal_torch_incremental_steps_from_a_shared_context(runtime, models):
    _, predictor = models
    assert runtime.supports_cache and runtime.describe()["step_graphs"] == [1, 2, 3]
    g = torch.Generator().manual_seed(3)
    S = 6
    z0 = torch.randn(1, 16, 64, generator=g)                          # one context frame, shared by all samples
    a0, s0 = torch.randn(1, 7, generator=g), torch.randn(1, 7, generator=g)
    with torch.no_grad():
        want, want_cache = predictor.forward_step(z0, a0, s0)
    got, cache = runtime.predict_step(z0, a0, s0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert cache.keys.shape == (2, 1, 4, 18, 16) and cache.steps == 1
    for _ in range(2):                                                 # then S samples on the 1-sample past
        z, a, s = torch.randn(S, 16, 64, generator=g), torch.randn(S, 7, generator=g), torch.randn(S, 7, generator=g)
        with torch.no_grad():
            want, want_cache = predictor.forward_step(z, a, s, want_cache)
        got, cache = runtime.predict_step(z, a, s, cache)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert cache.keys.shape == (2, S, 4, 54, 16)
    with pytest.raises(EngineError, match="no predictor step graph for step 4"):
        runtime.predict_step(z, a, s, cache)


def test_world_model_rollouts_agree_across_runtimes(runtime, engine_dir, scratch_dir):
    world_model = pytest.importorskip("vjepa2_ros.planning.world_model")
    torch_rt = open_runtime(RuntimeConfig(checkpoint=str(AC_FILE), encoder_checkpoint=str(ENC_FILE),
                                          encoder_cfg=ENC_CFG, predictor_cfg=PRED_CFG))
    for p in scratch_dir.glob("predictor-step-*"):                     # an ONNX runtime without step graphs
        p.unlink()
    no_steps = open_runtime(runtime_cfg(scratch_dir))
    assert not no_steps.supports_cache
    g = torch.Generator().manual_seed(4)
    z = torch.nn.functional.layer_norm(torch.randn(16, 64, generator=g), (64,))
    s = torch.tensor([0.4, 0.0, 0.3, 3.1, 0.0, 0.0, 0.2])
    actions = 0.05 * torch.randn(5, 3, 7, generator=g)
    want, poses = world_model.WorldModel(torch_rt).rollout(z, s, actions)
    for rt in (runtime, no_steps):
        got, got_poses = world_model.WorldModel(rt).rollout(z, s, actions)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        torch.testing.assert_close(got_poses, poses)


def test_float16_graph_matches_torch_float16_and_bfloat16_graph_is_valid(models, tmp_path):
    import onnx
    encoder, predictor = models
    export_onnx(encoder, predictor, tmp_path, ExportConfig(precision="float16", steps=(2,)), "random:seed=0")
    rt = open_runtime(RuntimeConfig(kind="onnxruntime", engine_dir=str(tmp_path), precision="float16"))
    z, a, s = torch.randn(4, 32, 64), torch.randn(4, 2, 7), torch.randn(4, 2, 7)
    out = rt.predict(z, a, s)
    assert out.dtype == torch.float16
    with torch.no_grad():                                              # same weights, torch in float16
        expected = copy.deepcopy(predictor).half()(z.half(), a.half(), s.half())
    torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=0)

    export_onnx(encoder, predictor, tmp_path, ExportConfig(precision="bfloat16", steps=(1,)), "random:seed=0")
    model = onnx.load(str(tmp_path / "predictor-T1-bfloat16.onnx"))
    onnx.checker.check_model(model)
    bf16 = onnx.TensorProto.BFLOAT16
    assert all(v.type.tensor_type.elem_type == bf16 for v in list(model.graph.input) + list(model.graph.output))
    with pytest.raises(EngineError, match="bfloat16 graphs need the CUDA or TensorRT provider"):
        open_runtime(RuntimeConfig(kind="onnxruntime", engine_dir=str(tmp_path), precision="bfloat16"))


def test_large_graphs_keep_weights_in_external_data_covered_by_the_manifest(models, tmp_path, monkeypatch):
    from vjepa2_ros.engines import onnx_export
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT_BYTES", 0)     # as the ViT-g graphs (> 2 GB) are written
    encoder, predictor = models
    export_onnx(encoder, predictor, tmp_path, ExportConfig(steps=(3,)), weights_id(AC_FILE), weights_id(ENC_FILE))
    m = read_manifest(tmp_path / "predictor-T3-float32.onnx")
    assert sorted(m.files) == ["predictor-T3-float32.onnx", "predictor-T3-float32.onnx.data"]
    assert (tmp_path / "predictor-T3-float32.onnx").stat().st_size < 100_000 < m.files[
        "predictor-T3-float32.onnx.data"]["bytes"]
    rt = open_runtime(runtime_cfg(tmp_path))
    io = load_fixture("ac_predictor_tiny_io.safetensors")
    torch.testing.assert_close(rt.predict(io["z_in"], io["actions_in"], io["states_in"]), io["out_heads4"],
                               atol=1e-5, rtol=1e-5)
    data = tmp_path / "predictor-T3-float32.onnx.data"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(EngineError, match=r"onnx.data is \d+ bytes, its manifest says \d+ \(truncated"):
        open_runtime(runtime_cfg(tmp_path))


# -- refusing what does not match ---------------------------------------------------------------
def test_other_model_config_is_refused_with_the_rebuild_command(engine_dir):
    with pytest.raises(EngineError, match=r"(?s)model config depth: file 2 vs wanted 3.*rebuild it with: "
                                          r"vjepa2-ros export"):
        open_runtime(runtime_cfg(engine_dir, encoder_cfg=dataclasses.replace(ENC_CFG, depth=3)))
    with pytest.raises(EngineError, match="predictor_embed_dim"):
        open_runtime(runtime_cfg(engine_dir, predictor_cfg=dataclasses.replace(PRED_CFG, predictor_embed_dim=32)))


def test_other_checkpoint_is_refused(engine_dir):
    with pytest.raises(EngineError, match="another checkpoint"):
        open_runtime(runtime_cfg(engine_dir, checkpoint=str(FIXTURES / "rope_hd64.safetensors")))


def test_predictor_files_from_other_weights_are_refused_even_without_a_checkpoint(scratch_dir):
    path = manifest_path(scratch_dir / "predictor-T3-float32.onnx")
    d = json.loads(path.read_text())
    d["weights"] = "random:seed=1"
    path.write_text(json.dumps(d))
    with pytest.raises(EngineError, match=r"predictor-T3-float32.onnx does not match(?s:.*)weights: file random:seed=1"):
        open_runtime(runtime_cfg(scratch_dir, checkpoint=None, encoder_checkpoint=None))


def test_other_shapes_are_refused(scratch_dir):
    # A manifest that claims other shapes than the config implies.
    path = manifest_path(scratch_dir / "predictor-T1-float32.onnx")
    d = json.loads(path.read_text())
    d["inputs"][0]["shape"] = ["samples", 32, 64]
    path.write_text(json.dumps(d))
    with pytest.raises(EngineError, match=r"inputs z: file float32\['samples', 32, 64\] vs wanted"):
        open_runtime(runtime_cfg(scratch_dir))


def test_graph_swapped_under_a_consistent_manifest_is_refused(scratch_dir):
    # The T=3 graph copied over the T=1 file, with its manifest's size and hash updated: the
    # graph's own inputs betray it.
    target = scratch_dir / "predictor-T1-float32.onnx"
    shutil.copy(scratch_dir / "predictor-T3-float32.onnx", target)
    path = manifest_path(target)
    d = json.loads(path.read_text())
    d["files"] = {target.name: {"bytes": target.stat().st_size, "sha256": sha256_file(target)}}
    path.write_text(json.dumps(d))
    with pytest.raises(EngineError, match="inputs are .* its manifest says"):
        open_runtime(runtime_cfg(scratch_dir))


def test_truncated_or_corrupt_onnx_is_a_clear_error(scratch_dir):
    target = scratch_dir / "encoder-float32.onnx"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineError, match="truncated or replaced"):
        open_runtime(runtime_cfg(scratch_dir))
    target.write_bytes(data[:100] + bytes(255 - b for b in data[100:200]) + data[200:])
    with pytest.raises(EngineError, match="corrupt or replaced"):
        open_runtime(runtime_cfg(scratch_dir))
    # Garbage under a manifest that vouches for it: onnxruntime's refusal becomes an EngineError.
    target.write_bytes(b"\x08\x07garbage" * 1000)
    path = manifest_path(target)
    d = json.loads(path.read_text())
    d["files"] = {target.name: {"bytes": target.stat().st_size, "sha256": sha256_file(target)}}
    path.write_text(json.dumps(d))
    with pytest.raises(EngineError, match="onnxruntime cannot load"):
        open_runtime(runtime_cfg(scratch_dir))


def test_missing_or_broken_manifest_is_refused(scratch_dir):
    path = manifest_path(scratch_dir / "predictor-T3-float32.onnx")
    path.write_text("{not json")
    with pytest.raises(EngineError, match="manifest .* is corrupt"):
        open_runtime(runtime_cfg(scratch_dir))
    path.unlink()
    with pytest.raises(EngineError, match="has no manifest"):
        open_runtime(runtime_cfg(scratch_dir))


def test_missing_files_steps_and_precision_are_clear_errors(engine_dir, runtime, tmp_path):
    with pytest.raises(EngineError, match="has no encoder-float16.onnx"):
        open_runtime(runtime_cfg(engine_dir, precision="float16"))
    with pytest.raises(EngineError, match="does not exist"):
        open_runtime(runtime_cfg(tmp_path / "nowhere"))
    with pytest.raises(EngineError, match=r"no predictor for T=4 .* T in \[1, 2, 3\]"):
        runtime.predict(torch.zeros(1, 64, 64), torch.zeros(1, 4, 7), torch.zeros(1, 4, 7))
    with pytest.raises(ConfigError, match="input actions must be"):
        runtime.predict(torch.zeros(1, 48, 64), torch.zeros(1, 3, 6), torch.zeros(1, 3, 7))


def test_missing_provider_is_refused(engine_dir):
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(EngineError, match="CUDAExecutionProvider is not available"):
        open_runtime(runtime_cfg(engine_dir, device="cuda"))
    with pytest.raises(EngineError, match="TensorrtExecutionProvider is not available"):
        open_runtime(runtime_cfg(engine_dir, device="cuda", onnx_provider="tensorrt"))


@pytest.mark.parametrize("bad, match", [
    (dict(kind="jax"), "runtime kind must be one of"),
    (dict(device="gpu"), "device must be"),
    (dict(precision="int8"), "precision must be one of"),
    (dict(kind="onnxruntime"), "needs engine_dir"),
    (dict(kind="tensorrt", engine_dir="x"), "runs on a CUDA device"),
    (dict(kind="onnxruntime", engine_dir="x", onnx_provider="cuda"), "does not run on device 'cpu'"),
    (dict(cuda_graphs=True), "needs a CUDA device"),
    (dict(kind="onnxruntime", engine_dir="x", compile=True), "apply to the torch runtime"),
])
def test_runtime_config_names_the_bad_value(bad, match):
    with pytest.raises(ConfigError, match=match):
        RuntimeConfig(**bad)


def test_torch_runtime_from_config_gives_the_fixture_outputs():
    rt = open_runtime(RuntimeConfig(checkpoint=str(AC_FILE), encoder_checkpoint=str(ENC_FILE),
                                    encoder_cfg=ENC_CFG, predictor_cfg=PRED_CFG))
    io = load_fixture("ac_predictor_tiny_io.safetensors")
    torch.testing.assert_close(rt.predict(io["z_in"], io["actions_in"], io["states_in"]), io["out_heads4"],
                               atol=1e-5, rtol=1e-5)
