"""The TensorRT runtime: engines built by `vjepa2-ros build-engines`, run on the torch CUDA stream.

Every engine's inputs and outputs are torch tensors preallocated at the profile's largest size
and bound once; a call copies its inputs into the leading rows, sets the input shapes and
enqueues `execute_async_v3` on the current torch stream, so it orders with the caller's torch
work without host synchronisation. `tensorrt` is imported only when this runtime is opened.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from vjepa2_ros.engines.factory import RuntimeConfig, load_artifacts, pick_predictor
from vjepa2_ros.engines.manifest import Manifest
from vjepa2_ros.engines.runtime import Runtime
from vjepa2_ros.engines.trt_build import current_gpu, import_tensorrt
from vjepa2_ros.errors import ConfigError, EngineError

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TrtEngine:
    """One deserialized engine with an execution context and preallocated, bound I/O tensors."""

    def __init__(self, trt: ModuleType, runtime: Any, path: Path, manifest: Manifest, device: torch.device) -> None:
        self.path, self.manifest, self.device = path, manifest, device
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT cannot deserialize {path} (corrupt, or built by another TensorRT "
                              f"version); rebuild with: {manifest.rebuild}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        want_in, want_out = [s.name for s in manifest.inputs], [s.name for s in manifest.outputs]
        if sorted(inputs) != sorted(want_in) or sorted(outputs) != sorted(want_out):
            raise EngineError(f"{path} has inputs {inputs} and outputs {outputs}, its manifest says {want_in} and "
                              f"{want_out}; rebuild with: {manifest.rebuild}")
        trt_dtypes = {"float32": trt.DataType.FLOAT, "float16": trt.DataType.HALF, "bfloat16": trt.DataType.BF16}
        spec = manifest.inputs[0]
        lo, _, hi = (tuple(s) for s in self.engine.get_tensor_profile_shape(spec.name, 0))
        self.min_rows, self.max_rows = lo[0], hi[0]
        self.buffers: dict[str, torch.Tensor] = {}
        for s in manifest.inputs + manifest.outputs:
            if self.engine.get_tensor_dtype(s.name) != trt_dtypes[s.dtype]:
                raise EngineError(f"{path} tensor {s.name} is {self.engine.get_tensor_dtype(s.name)}, its manifest "
                                  f"says {s.dtype}; rebuild with: {manifest.rebuild}")
            self.buffers[s.name] = torch.empty((self.max_rows, *s.shape[1:]), dtype=TORCH_DTYPES[s.dtype],
                                               device=device)
            self.context.set_tensor_address(s.name, self.buffers[s.name].data_ptr())

    def run(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Inputs in manifest order [rows, ...] -> a fresh output tensor [rows, ...]."""
        rows = inputs[0].shape[0] if isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 0 else 0
        if not self.min_rows <= rows <= self.max_rows:
            raise EngineError(f"{self.path.name} was built for {self.min_rows}..{self.max_rows} rows "
                              f"(dim 0 of {self.manifest.inputs[0].name}), got {rows}; rebuild with a wider "
                              f"`--samples` / `--batch` profile: {self.manifest.rebuild}")
        for spec, t in zip(self.manifest.inputs, inputs):
            fixed = tuple(spec.shape[1:])
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != (rows, *fixed):
                raise ConfigError(f"{self.path.name} input {spec.name} must be [{rows}, "
                                  f"{', '.join(map(str, fixed))}], got {tuple(getattr(t, 'shape', ()))}")
            self.buffers[spec.name][:rows].copy_(t)            # casts dtype and moves to the GPU as needed
            self.context.set_input_shape(spec.name, (rows, *fixed))
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"TensorRT failed to enqueue {self.path.name} (see its log)")
        return self.buffers[self.manifest.outputs[0].name][:rows].clone()   # the next call reuses the buffer


class TrtRuntime(Runtime):
    """Encoder and fixed-T predictor engines from an engine directory, on one CUDA device."""

    name = "tensorrt"

    def __init__(self, cfg: RuntimeConfig) -> None:
        trt = import_tensorrt()
        device = torch.device(cfg.device if cfg.device != "cuda" else f"cuda:{torch.cuda.current_device()}")
        found = load_artifacts(cfg, "tensorrt", tools={"tensorrt": trt.__version__}, gpu=current_gpu(device))
        super().__init__(found.encoder_cfg, found.predictor_cfg, device, cfg.dtype)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(device):
            self.encoder = TrtEngine(trt, self._runtime, found.encoder, found.manifests[found.encoder], device)
            self.predictors = {steps: TrtEngine(trt, self._runtime, path, found.manifests[path], device)
                               for steps, path in found.predictors.items()}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.run(images)

    def predict(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        engine = pick_predictor(self.predictors, z, self.predictor_cfg.tokens_per_frame, "tensorrt")
        return engine.run(z, actions, states)

    def release(self) -> None:
        self.encoder = None
        self.predictors = {}
        torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "predictor_steps": sorted(self.predictors),
                "samples_range": [self.predictors[min(self.predictors)].min_rows,
                                  self.predictors[min(self.predictors)].max_rows] if self.predictors else None}
