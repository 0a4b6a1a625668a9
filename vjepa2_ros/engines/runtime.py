"""The runtime interface: how the planner runs the two networks, whatever executes them.

A runtime maps preprocessed images to raw encoder tokens and (latents, actions, states) to raw
predictor outputs. The AC pipeline's `normalize_latents` is applied by the caller (the
planner's WorldModel), so every runtime computes exactly the official networks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from vjepa2_ros.errors import EngineError
from vjepa2_ros.model.config import EncoderConfig, PredictorConfig


class Runtime(ABC):
    """Encoder + AC predictor behind one interface (torch, ONNX Runtime, TensorRT)."""

    name: str = "runtime"
    #: True when `predict_step` reuses keys/values of earlier steps (incremental rollouts).
    supports_cache: bool = False

    def __init__(self, encoder_cfg: EncoderConfig, predictor_cfg: PredictorConfig,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.encoder_cfg = encoder_cfg
        self.predictor_cfg = predictor_cfg
        self.device = torch.device(device)
        self.dtype = dtype

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images [B, 3, H, W] -> raw encoder tokens [B, N, D] (each image a tubelet)."""

    @abstractmethod
    def predict(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """z [S, T*n, D], actions [S, T, 7], states [S, T, 7] -> raw predictions [S, T*n, D]."""

    def predict_step(self, z: torch.Tensor, action: torch.Tensor, state: torch.Tensor,
                     cache: Any = None, keep_cache: bool = True) -> tuple[torch.Tensor, Any]:
        """One more step on top of `cache`: z [S, n, D], action/state [S, 7] -> ([S, n, D], cache).

        keep_cache=False (the last step of a rollout) may return None instead of a cache."""
        raise EngineError(f"the {self.name} runtime has no incremental predictor step; use predict()")

    def release(self) -> None:
        """Free device memory (a node's cleanup). The runtime is unusable afterwards."""

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.name, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "encoder": self.encoder_cfg.to_dict(), "predictor": self.predictor_cfg.to_dict()}
