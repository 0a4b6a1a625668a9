"""The torch runtime: the model modules themselves, eager, on CPU or CUDA.

Options on top of eager: `compile` wraps both networks in `torch.compile`; `cuda_graphs`
captures `predict` once per input shape (samples S, steps T) on a CUDA device and replays it,
which removes the per-kernel launch cost that dominates small-S planning steps.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from vjepa2_ros.engines.runtime import Runtime
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.encoder import VJEPA2Encoder
from vjepa2_ros.model.predictor import ACPredictor, PredictorCache

WARMUP_CALLS = 3     # eager calls on a side stream before a CUDA-graph capture (lazy init, allocator)


class _CapturedPredict:
    """`fn` captured in one CUDA graph for one set of input shapes; replay copies inputs in, output out."""

    def __init__(self, fn: Callable[..., torch.Tensor], example: tuple[torch.Tensor, ...], pool: Any) -> None:
        self.inputs = tuple(t.clone() for t in example)             # static input buffers
        side = torch.cuda.Stream(device=example[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = fn(*self.inputs)                           # static output buffer

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for dst, src in zip(self.inputs, inputs):
            dst.copy_(src)
        self.graph.replay()
        return self.output.clone()                                   # the next replay overwrites self.output


class TorchRuntime(Runtime):
    name = "torch"
    supports_cache = True

    def __init__(self, encoder: VJEPA2Encoder, predictor: ACPredictor,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 compile: bool = False, cuda_graphs: bool = False) -> None:
        super().__init__(encoder.cfg, predictor.cfg, device, dtype)
        if cuda_graphs and self.device.type != "cuda":
            raise ConfigError(f"cuda_graphs needs a CUDA device, got {self.device}")
        self.encoder = encoder.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.predictor = predictor.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self._encode = torch.compile(self.encoder) if compile else self.encoder
        self._predict = torch.compile(self.predictor) if compile else self.predictor
        self._predict_step = (torch.compile(self.predictor.forward_step, dynamic=False) if compile
                              else self.predictor.forward_step)
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[tuple[int, ...], ...], _CapturedPredict] = {}   # input shapes -> capture
        self._pool = torch.cuda.graph_pool_handle() if cuda_graphs else None    # one memory pool for all shapes
        if compile:
            self.name = "torch-compile"
        elif cuda_graphs:
            self.name = "torch-cudagraph"

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._encode(images.to(self.device, self.dtype))

    @torch.inference_mode()
    def predict(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        d = dict(device=self.device, dtype=self.dtype)
        inputs = (z.to(**d), actions.to(**d), states.to(**d))
        if not self.cuda_graphs:
            return self._predict(*inputs)
        self.predictor.check_inputs(*inputs)                         # bad shapes fail here, not in a capture
        key = tuple(tuple(t.shape) for t in inputs)
        if key not in self._graphs:
            self._graphs[key] = _CapturedPredict(self._predict, inputs, self._pool)
        return self._graphs[key](*inputs)

    @torch.inference_mode()
    def predict_step(self, z: torch.Tensor, action: torch.Tensor, state: torch.Tensor,
                     cache: PredictorCache | None = None, keep_cache: bool = True) -> tuple[torch.Tensor, Any]:
        d = dict(device=self.device, dtype=self.dtype)
        return self._predict_step(z.to(**d), action.to(**d), state.to(**d), cache, keep_cache)

    def release(self) -> None:
        self._graphs.clear()
        self.encoder.to("meta")
        self.predictor.to("meta")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "captured_shapes": [list(k[0]) for k in self._graphs]}
