"""Camera frames -> model input, as the official transforms do it (spec c and f).

One function serves replay, training and the robot, so preprocessing is the same everywhere:
optional region of interest (a lab's camera crop), then the planner's centre square crop or the
DROID training crop, bilinear resize without antialias, ImageNet normalisation of 0..255 values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vjepa2_ros.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_MODES = ("inference", "droid_train")
# Aspect-ratio ranges of the official RandomResizedCrop; with scale (1,1) / (1.777,1.777) the
# sampler never fits and falls back to its deterministic centre crop clamped to these ratios.
_CROP_RATIOS = {"inference": (1.0, 1.0), "droid_train": (0.75, 1.35)}


@dataclass(frozen=True)
class PreprocessConfig:
    crop_size: int = 256                               # output side in pixels
    mode: str = "inference"                            # "inference" (centre square) or "droid_train"
    roi: tuple[int, int, int, int] | None = None       # (x, y, width, height) in camera pixels, applied first

    def __post_init__(self) -> None:
        if self.mode not in CROP_MODES:
            raise ConfigError(f"preprocess mode must be one of {CROP_MODES}, got {self.mode!r}")
        if not isinstance(self.crop_size, int) or self.crop_size < 1:
            raise ConfigError(f"crop_size must be a positive int, got {self.crop_size!r}")
        if self.roi is not None:
            if len(self.roi) != 4 or any(int(v) != v for v in self.roi):
                raise ConfigError(f"roi must be (x, y, width, height) integers, got {self.roi!r}")
            x, y, w, h = self.roi
            if x < 0 or y < 0 or w < 1 or h < 1:
                raise ConfigError(f"roi {self.roi} must have x, y >= 0 and width, height >= 1")


def centre_crop_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop fallback: centre crop with aspect ratio clamped to `ratio`.

    Returns (top, left, crop_height, crop_width).
    """
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _as_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate uint8 [H,W,3] or [T,H,W,3]; return a uint8 tensor [T,H,W,3]."""
    if isinstance(frames, np.ndarray):
        # Read-only buffers (ROS message data, memory-mapped files) are copied: torch needs writable memory.
        frames = np.ascontiguousarray(frames) if frames.flags.writeable else np.array(frames)
    t = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    if not isinstance(t, torch.Tensor):
        raise ConfigError(f"frames must be a numpy array or tensor, got {type(frames).__name__}")
    if t.dtype != torch.uint8:
        raise ConfigError(f"frames must be uint8 RGB (0..255), got dtype {t.dtype}")
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[-1] != 3:
        raise ConfigError(f"frames must be [H, W, 3] or [T, H, W, 3] RGB, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] < 1 or t.shape[2] < 1:
        raise ConfigError(f"frames must be non-empty, got shape {tuple(t.shape)}")
    return t


def preprocess_frames(frames: np.ndarray | torch.Tensor, cfg: PreprocessConfig = PreprocessConfig(),
                      device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 RGB [H,W,3] or [T,H,W,3] -> float32 [3, T, crop, crop], ImageNet-normalised."""
    x = _as_frames(frames)
    if cfg.roi is not None:
        rx, ry, rw, rh = cfg.roi
        if ry + rh > x.shape[1] or rx + rw > x.shape[2]:
            raise ConfigError(f"roi {cfg.roi} (x, y, width, height) exceeds the {x.shape[2]}x{x.shape[1]} frame")
        x = x[:, ry:ry + rh, rx:rx + rw]
    x = x.to(device=device).permute(0, 3, 1, 2).float()             # T, 3, H, W, values 0..255
    top, left, h, w = centre_crop_box(x.shape[2], x.shape[3], _CROP_RATIOS[cfg.mode])
    x = x[:, :, top:top + h, left:left + w]
    x = F.interpolate(x, size=(cfg.crop_size, cfg.crop_size), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - mean) / std).permute(1, 0, 2, 3).contiguous()       # 3, T, crop, crop
