"""Build TensorRT engines from our exported ONNX graphs (GPU hosts), each with a manifest.

An engine is specific to the TensorRT version and the GPU it was built on; its manifest records
both, and the TensorRT runtime refuses an engine built elsewhere. The dynamic axis (encoder
batch, predictor samples) gets one optimisation profile min/opt/max. Timings are kept in a
timing cache file so that rebuilding (another T, another precision) is quick.

Precision lives in the ONNX graph. TensorRT 10 builds a weakly typed network and gets the
precision flag (FP16 / BF16; TF32 off for float32); TensorRT 11 has no such flags and builds a
strongly typed network, which takes every dtype from the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from vjepa2_ros.engines.manifest import (Expected, Manifest, TensorSpec, artifact_name, check_manifest, file_entries,
                                         io_specs, read_manifest, tool_versions, write_manifest)
from vjepa2_ros.errors import ConfigError, EngineError
from vjepa2_ros.model.config import config_from_dict

INSTALL_HINT = ("install it on a GPU host with `pip install tensorrt-cu12` (matching your CUDA major version), "
                "or use NVIDIA's TensorRT container / docker/ of this repository")


def import_tensorrt() -> ModuleType:
    """The tensorrt module, or an EngineError that says how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise EngineError(f"TensorRT is not installed: {INSTALL_HINT}") from None
    if not torch.cuda.is_available():
        raise EngineError("TensorRT needs a CUDA GPU, and torch sees none (CPU-only torch, or no driver)")
    return tensorrt


def current_gpu(device: torch.device | str = "cuda") -> dict[str, str]:
    """{"name", "compute_capability"} of a CUDA device, as recorded in TensorRT manifests."""
    device = torch.device(device)
    major, minor = torch.cuda.get_device_capability(device)
    return {"name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


def _profile(text: tuple[int, int, int], name: str) -> tuple[int, int, int]:
    lo, opt, hi = text
    if not (isinstance(lo, int) and 1 <= lo <= opt <= hi):
        raise ConfigError(f"{name} profile must be 1 <= min <= opt <= max, got {text}")
    return (lo, opt, hi)


@dataclass(frozen=True)
class BuildConfig:
    samples: tuple[int, int, int] = (1, 256, 800)   # predictor: min/opt/max candidate action sequences per call
    batch: tuple[int, int, int] = (1, 1, 8)         # encoder: min/opt/max images per call
    workspace_gib: float = 8.0                      # TensorRT scratch memory limit
    timing_cache: str | None = None                 # default: <engine dir>/timing.cache

    def __post_init__(self) -> None:
        _profile(self.samples, "samples")
        _profile(self.batch, "batch")
        if not 0 < self.workspace_gib <= 1024:
            raise ConfigError(f"workspace_gib must be in (0, 1024], got {self.workspace_gib}")


def strongly_typed(trt: ModuleType) -> bool:
    """TensorRT 11 builds strongly typed networks only (the FP16/BF16 builder flags are gone)."""
    return int(trt.__version__.split(".")[0]) >= 11 or not hasattr(trt.BuilderFlag, "FP16")


def build_engine(onnx_path: str | Path, cfg: BuildConfig, device: str = "cuda", rebuild: str = "") -> Path:
    """ONNX graph (with manifest) -> `<same name>.engine` + manifest beside it. Returns the engine path."""
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    source = read_manifest(onnx_path)
    if source.format != "onnx":
        raise EngineError(f"{onnx_path} is not an exported ONNX graph (manifest format {source.format!r})")
    if source.network == "predictor_step":
        raise EngineError(f"{onnx_path} is a KV-cached step graph; TensorRT engines are built from the encoder "
                          f"and the fixed-T predictor graphs")
    model_cfg = config_from_dict(source.network, source.model)
    check_manifest(source, Expected(source.network, None, None, source.precision, source.steps,
                                    *io_specs(source.network, model_cfg, source.precision, source.steps)), onnx_path)
    out = onnx_path.with_name(artifact_name(source.network, source.precision, source.steps, "tensorrt"))
    profile_range = cfg.batch if source.network == "encoder" else cfg.samples
    timing_path = Path(cfg.timing_cache) if cfg.timing_cache else onnx_path.parent / "timing.cache"

    if torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))        # TensorRT builds on the current CUDA device
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    typed = strongly_typed(trt)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(1 << int(flag) if typed and flag is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors[:3])}; "
                          f"re-export with: {source.rebuild}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * (1 << 30)))
    if not typed:
        flags = {"float16": "FP16", "bfloat16": "BF16"}
        if source.precision in flags:
            config.set_flag(getattr(trt.BuilderFlag, flags[source.precision]))
    if source.precision == "float32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)          # float32 means float32 (parity with torch)
    profile = builder.create_optimization_profile()
    for spec in source.inputs:
        lo, opt, hi = ((n, *spec.shape[1:]) for n in profile_range)
        profile.set_shape(spec.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build {out.name} from {onnx_path} (see its log above); "
                          f"try a larger --workspace-gib or a smaller --samples max")
    out.write_bytes(memoryview(serialized))
    timing_path.write_bytes(memoryview(config.get_timing_cache().serialize()))

    with_profile = lambda specs: tuple(TensorSpec(s.name, s.dtype, s.shape, profile_range) for s in specs)  # noqa: E731
    manifest = Manifest(
        format="tensorrt", network=source.network, model=source.model, weights=source.weights,
        precision=source.precision, steps=source.steps, inputs=with_profile(source.inputs),
        outputs=with_profile(source.outputs), file=out.name, files=file_entries(out.parent, [out.name]),
        tools={**tool_versions(), "tensorrt": trt.__version__, "strongly_typed": str(typed)},
        rebuild=rebuild or f"vjepa2-ros build-engines --engine-dir {out.parent} --precision {source.precision}",
        gpu=current_gpu(device), source={"file": onnx_path.name, "sha256": source.files[onnx_path.name]["sha256"]})
    write_manifest(manifest, out.parent)
    return out
