"""The ONNX Runtime runtime: exported graphs on the CPU, CUDA or TensorRT execution provider.

Providers are tried in the order TensorRT, CUDA, CPU, starting at the configured one. ONNX
Runtime silently falls back to the CPU when a GPU provider cannot start; here that is an error,
because a planner that expected a GPU and runs 100x slower is a failure. Inputs and outputs are
torch tensors bound in place (IOBinding): no copies through numpy, on the CPU or the GPU.
When the directory holds step graphs (`export --step-graphs`), `predict_step` runs KV-cached
incremental rollouts like the torch runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def provider_chain(provider: str, device: torch.device, dtype: torch.dtype, cache_dir: Path
                   ) -> list[tuple[str, dict[str, Any]]]:
    """(name, options) from the configured provider down to the CPU, e.g. cuda -> [CUDA, CPU]."""
    index = device.index or 0
    options = {
        "tensorrt": {"device_id": index, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
                     "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir),
                     # a float16 graph needs TensorRT's FP16 kernels allowed (TensorRT 10 is weakly typed)
                     "trt_fp16_enable": dtype == torch.float16},
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

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs in manifest order -> all outputs, on the runtime's device.

        Named (dynamic) dims take their sizes from the inputs; every fixed dim is checked.
        """
        sizes: dict[str, int] = {}
        tensors = [self._prepare(spec, t, sizes) for spec, t in zip(self.manifest.inputs, inputs)]
        outputs = [torch.empty([sizes[d] if isinstance(d, str) else d for d in spec.shape], dtype=self.dtype,
                               device=self.device) for spec in self.manifest.outputs]
        binding = self.session.io_binding()
        index, element = self.device.index or 0, ONNX_ELEMENT_TYPE[self.dtype]
        for spec, t in zip(self.manifest.inputs, tensors):
            binding.bind_input(spec.name, self.device_type, index, element, tuple(t.shape), t.data_ptr())
        for spec, t in zip(self.manifest.outputs, outputs):
            binding.bind_output(spec.name, self.device_type, index, element, tuple(t.shape), t.data_ptr())
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()   # ORT runs on its own stream: inputs must be ready
        try:
            self.session.run_with_iobinding(binding)               # returns when the outputs are written
        except Exception as e:                                     # ORT raises its own exception types
            raise EngineError(f"onnxruntime failed to run {self.path.name} on {self.session.get_providers()[0]}: "
                              f"{str(e).strip().splitlines()[0]}") from None
        return tuple(outputs)

    def _prepare(self, spec: TensorSpec, t: torch.Tensor, sizes: dict[str, int]) -> torch.Tensor:
        """Check `t` against `spec` (recording the sizes of named dims), cast and make it contiguous."""
        shape = tuple(getattr(t, "shape", ()))
        ok = isinstance(t, torch.Tensor) and len(shape) == len(spec.shape)
        for dim, size in zip(spec.shape, shape):
            if isinstance(dim, str):
                ok = ok and size >= 1 and sizes.setdefault(dim, size) == size
            else:
                ok = ok and size == dim
        if not ok:
            raise ConfigError(f"{self.path.name} input {spec.name} must be [{', '.join(map(str, spec.shape))}]"
                              f"{f' with {sizes}' if sizes else ''}, got {shape}")
        return t.to(device=self.device, dtype=self.dtype).contiguous()


@dataclass(frozen=True)
class OrtStepCache:
    """Keys and values of the steps run so far: [depth, S or 1, heads, steps*(2+n), hd] each."""

    keys: torch.Tensor
    values: torch.Tensor
    steps: int


class OrtRuntime(Runtime):
    """Encoder and fixed-T predictor graphs from an engine directory written by `vjepa2-ros export`."""

    name = "onnxruntime"

    def __init__(self, cfg: RuntimeConfig) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineError("onnxruntime is not installed: `pip install onnxruntime` (CPU) or "
                              "`pip install onnxruntime-gpu` (CUDA / TensorRT providers)") from None
        available = ort.get_available_providers()
        wanted = PROVIDER_NAMES[cfg.provider]
        if wanted not in available:
            raise EngineError(f"onnxruntime provider {wanted} is not available in this onnxruntime "
                              f"{ort.__version__} (available: {available}); install onnxruntime-gpu for CUDA / "
                              f"TensorRT, or set onnx_provider='cpu' with device 'cpu'")
        found = load_artifacts(cfg, "onnx")
        super().__init__(found.encoder_cfg, found.predictor_cfg, cfg.device, cfg.dtype)
        providers = provider_chain(cfg.provider, self.device, cfg.dtype, Path(cfg.engine_dir) / "ort_trt_cache")
        self.provider = wanted
        self.encoder = OrtGraph(found.encoder, found.manifests[found.encoder], providers, self.device, self.dtype)
        self.predictors = {steps: OrtGraph(path, found.manifests[path], providers, self.device, self.dtype)
                           for steps, path in found.predictors.items()}
        self.step_graphs = {steps: OrtGraph(path, found.manifests[path], providers, self.device, self.dtype)
                            for steps, path in found.step_predictors.items()}
        self.supports_cache = bool(self.step_graphs)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.run(images)[0]

    def predict(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        graph = pick_predictor(self.predictors, z, self.predictor_cfg.tokens_per_frame, "onnx")
        return graph.run(z, actions, states)[0]

    def predict_step(self, z: torch.Tensor, action: torch.Tensor, state: torch.Tensor,
                     cache: OrtStepCache | None = None, keep_cache: bool = True
                     ) -> tuple[torch.Tensor, OrtStepCache | None]:
        """One more step: z [S, n, D], action/state [S, 7] -> ([S, n, D], cache). The cache may hold 1 sample."""
        steps = 1 if cache is None else cache.steps + 1
        graph = self.step_graphs.get(steps)
        if graph is None:
            raise EngineError(f"no predictor step graph for step {steps}; this engine directory has steps "
                              f"{sorted(self.step_graphs) or 'none'}. Export them with `vjepa2-ros export "
                              f"--step-graphs --steps {steps}` (or use predict())")
        past = () if cache is None else (cache.keys, cache.values)
        out, keys, values = graph.run(z, action, state, *past)
        return out, OrtStepCache(keys, values, steps) if keep_cache else None

    def release(self) -> None:
        self.encoder = None
        self.predictors = {}
        self.step_graphs = {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "provider": self.provider, "predictor_steps": sorted(self.predictors),
                "step_graphs": sorted(self.step_graphs)}
