"""The torch runtime: the model modules themselves, eager, on CPU or CUDA."""

from __future__ import annotations

from typing import Any

import torch

from vjepa2_ros.engines.runtime import Runtime
from vjepa2_ros.model.encoder import VJEPA2Encoder
from vjepa2_ros.model.predictor import ACPredictor, PredictorCache


class TorchRuntime(Runtime):
    name = "torch"
    supports_cache = True

    def __init__(self, encoder: VJEPA2Encoder, predictor: ACPredictor,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        super().__init__(encoder.cfg, predictor.cfg, device, dtype)
        self.encoder = encoder.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.predictor = predictor.to(device=self.device, dtype=dtype).eval().requires_grad_(False)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images.to(self.device, self.dtype))

    @torch.inference_mode()
    def predict(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        d = dict(device=self.device, dtype=self.dtype)
        return self.predictor(z.to(**d), actions.to(**d), states.to(**d))

    @torch.inference_mode()
    def predict_step(self, z: torch.Tensor, action: torch.Tensor, state: torch.Tensor,
                     cache: PredictorCache | None = None) -> tuple[torch.Tensor, Any]:
        d = dict(device=self.device, dtype=self.dtype)
        return self.predictor.forward_step(z.to(**d), action.to(**d), state.to(**d), cache)

    def release(self) -> None:
        self.encoder.to("meta")
        self.predictor.to("meta")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
