"""The ONNX Runtime runtime: exported graphs on the CPU, CUDA or TensorRT execution provider.

Providers are tried in the order TensorRT, CUDA, CPU, starting at the configured one. ONNX
Runtime silently falls back to the CPU when a GPU provider cannot start; here that is an error,
because a planner that expected a GPU and runs 100x slower is a failure. Inputs and outputs are
torch tensors bound in place (IOBinding): no copies through numpy, on the CPU or the GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vjepa2_ros.engines.factory import RuntimeConfig, load_artifacts, pick_predictor
from vjepa2_ros.engines.manifest import Manifest, TensorSpec
from vjepa2_ros.engines.runtime import Runtime
from vjepa2_ros.errors import ConfigError, EngineError

PROVIDER_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
                  "cpu": "CPUExecutionProvider"}
FALLBACK_ORDER = ("tensorrt", "cuda", "cpu")
# torch dtype -> ONNX TensorProto element type (FLOAT, FLOAT16, BFLOAT16)
ONNX_ELEMENT_TYPE = {torch.float32: 1, torch.float16: 10, torch.bfloat16: 16}


def provider_chain(provider: str, device: torch.device, cache_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, options) from the configured provider down to the CPU, e.g. cuda -> [CUDA, CPU]."""
    index = device.index or 0
    options = {
        "tensorrt": {"device_id": index, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
                     "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir)},
        "cuda": {"device_id": index, "use_tf32": 0},      # float32 graphs compute in float32, as torch does
        "cpu": {},
    }
    return [(PROVIDER_NAMES[p], options[p]) for p in FALLBACK_ORDER[FALLBACK_ORDER.index(provider):]]


class OrtGraph:
    """One exported graph in an InferenceSession; `run` binds torch tensors in and out."""

    def __init__(self, path: Path, manifest: Manifest, providers: list[tuple[str, dict[str, Any]]],
                 device: torch.device, dtype: torch.dtype) -> None:
        import onnxruntime as ort

        self.path, self.manifest, self.device, self.dtype = path, manifest, device, dtype
        options = ort.SessionOptions()
        options.log_severity_level = 3                       # errors only: fallbacks are checked below
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:                               # ORT raises its own exception types
            hint = ("; float16/bfloat16 graphs need the CUDA or TensorRT provider (the CPU provider lacks "
                    "their kernels)" if dtype != torch.float32 and providers[0][0] == PROVIDER_NAMES["cpu"] else "")
            raise EngineError(f"onnxruntime cannot load {path}: {str(e).strip().splitlines()[0]}{hint}; "
                              f"rebuild with: {manifest.rebuild}") from None
        chosen = self.session.get_providers()[0]
        if chosen != providers[0][0]:
            raise EngineError(f"onnxruntime runs {path.name} on {chosen}, not the configured {providers[0][0]} "
                              f"(it falls back silently when a provider cannot start: check the CUDA / TensorRT "
                              f"libraries and the onnxruntime-gpu install)")
        self._check_io()
        self.device_type = "cuda" if device.type == "cuda" else "cpu"

    def _check_io(self) -> None:
        """The graph's real inputs/outputs must be the manifest's (names, dtypes, fixed dims)."""
        type_names = {"float32": "tensor(float)", "float16": "tensor(float16)", "bfloat16": "tensor(bfloat16)"}
        for label, actual, specs in (("inputs", self.session.get_inputs(), self.manifest.inputs),
                                     ("outputs", self.session.get_outputs(), self.manifest.outputs)):
            have = [(a.name, a.type, [d if isinstance(d, int) else "dyn" for d in a.shape]) for a in actual]
            want = [(s.name, type_names[s.dtype], [d if isinstance(d, int) else "dyn" for d in s.shape]) for s in specs]
            if have != want:
                raise EngineError(f"{self.path} {label} are {have}, its manifest says {want} (file replaced?); "
                                  f"rebuild with: {self.manifest.rebuild}")

    def run(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Inputs in manifest order, leading dim dynamic -> the one output, on the runtime's device."""
        tensors = [self._prepare(spec, t) for spec, t in zip(self.manifest.inputs, inputs)]
        out_spec = self.manifest.outputs[0]
        out = torch.empty((tensors[0].shape[0], *out_spec.shape[1:]), dtype=self.dtype, device=self.device)
        binding = self.session.io_binding()
        index = self.device.index or 0
        for spec, t in zip(self.manifest.inputs, tensors):
            binding.bind_input(spec.name, self.device_type, index, ONNX_ELEMENT_TYPE[self.dtype], tuple(t.shape),
                               t.data_ptr())
        binding.bind_output(out_spec.name, self.device_type, index, ONNX_ELEMENT_TYPE[self.dtype], tuple(out.shape),
                            out.data_ptr())
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()   # ORT runs on its own stream: inputs must be ready
        self.session.run_with_iobinding(binding)                   # returns when the output is written
        return out

    def _prepare(self, spec: TensorSpec, t: torch.Tensor) -> torch.Tensor:
        fixed = tuple(spec.shape[1:])
        if not isinstance(t, torch.Tensor) or t.dim() != len(spec.shape) or tuple(t.shape[1:]) != fixed \
                or t.shape[0] < 1:
            raise ConfigError(f"{self.path.name} input {spec.name} must be [{spec.shape[0]}, "
                              f"{', '.join(map(str, fixed))}], got {tuple(getattr(t, 'shape', ()))}")
        return t.to(device=self.device, dtype=self.dtype).contiguous()


class OrtRuntime(Runtime):
    """Encoder and fixed-T predictor graphs from an engine directory written by `vjepa2-ros export`."""

    name = "onnxruntime"

    def __init__(self, cfg: RuntimeConfig) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineError("onnxruntime is not installed: `pip install onnxruntime` (CPU) or "
                              "`pip install onnxruntime-gpu` (CUDA / TensorRT providers)") from None
        found = load_artifacts(cfg, "onnx")
        super().__init__(found.encoder_cfg, found.predictor_cfg, cfg.device, cfg.dtype)
        available = ort.get_available_providers()
        wanted = PROVIDER_NAMES[cfg.provider]
        if wanted not in available:
            raise EngineError(f"onnxruntime provider {wanted} is not available in this onnxruntime "
                              f"{ort.__version__} (available: {available}); install onnxruntime-gpu for CUDA / "
                              f"TensorRT, or set onnx_provider='cpu' with device 'cpu'")
        providers = provider_chain(cfg.provider, self.device, Path(cfg.engine_dir) / "ort_trt_cache")
        self.provider = wanted
        self.encoder = OrtGraph(found.encoder, found.manifests[found.encoder], providers, self.device, self.dtype)
        self.predictors = {steps: OrtGraph(path, found.manifests[path], providers, self.device, self.dtype)
                           for steps, path in found.predictors.items()}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.run(images)

    def predict(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        graph = pick_predictor(self.predictors, z, self.predictor_cfg.tokens_per_frame, "onnx")
        return graph.run(z, actions, states)

    def release(self) -> None:
        self.encoder = None
        self.predictors = {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "provider": self.provider, "predictor_steps": sorted(self.predictors)}
