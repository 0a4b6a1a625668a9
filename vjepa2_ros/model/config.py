"""Model configurations: one frozen dataclass per network, presets for the released sizes.

Field names follow the official constructors (`img_size`, `patch_size`, `num_frames`,
`tubelet_size`, `embed_dim`, `depth`, `num_heads`, `mlp_ratio`, `predictor_embed_dim`,
`action_embed_dim`), so a config can be written from the spec's tables and changed with
`dataclasses.replace`. Constructors never read tensor values: the released sizes can be built
on the `meta` device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Union

from vjepa2_ros.errors import ConfigError

ImgSize = Union[int, tuple[int, int]]
ATTN_KERNELS = ("sdpa", "math")


def _hw(img_size: ImgSize) -> tuple[int, int]:
    if isinstance(img_size, int):
        return (img_size, img_size)
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2:
        return (int(img_size[0]), int(img_size[1]))
    raise ConfigError(f"img_size must be an int or an (H, W) pair, got {img_size!r}")


def _check_common(cfg: Any, width: int) -> None:
    """Checks shared by both networks; `width` is the transformer width."""
    h, w = _hw(cfg.img_size)
    for name, value in (("patch_size", cfg.patch_size), ("tubelet_size", cfg.tubelet_size),
                        ("depth", cfg.depth), ("num_heads", cfg.num_heads), ("num_frames", cfg.num_frames)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive int, got {value!r}")
    if h % cfg.patch_size or w % cfg.patch_size:
        raise ConfigError(f"img_size {cfg.img_size} must be a multiple of patch_size {cfg.patch_size}")
    if width % cfg.num_heads:
        raise ConfigError(f"width {width} must be divisible by num_heads {cfg.num_heads}")
    if (width // cfg.num_heads) % 2:
        raise ConfigError(f"head dim {width // cfg.num_heads} must be even for RoPE")
    if cfg.mlp_ratio <= 0:
        raise ConfigError(f"mlp_ratio must be > 0, got {cfg.mlp_ratio}")
    if cfg.attn not in ATTN_KERNELS:
        raise ConfigError(f"attn must be one of {ATTN_KERNELS}, got {cfg.attn!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """The V-JEPA 2 video encoder (3D-RoPE ViT, no cls token, no absolute positions)."""

    img_size: ImgSize = 256         # pixels; int or (H, W). Only a default: positions follow the input grid
    patch_size: int = 16            # pixels per patch side
    num_frames: int = 64            # the hub's value; unused by RoPE, kept for fidelity
    tubelet_size: int = 2           # frames per tubelet
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0          # hidden = int(embed_dim * mlp_ratio)
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    attn: str = "sdpa"              # "sdpa" (fused) or "math" (explicit softmax; export-friendly)

    def __post_init__(self) -> None:
        _check_common(self, self.embed_dim)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def grid(self, img_size: ImgSize | None = None) -> tuple[int, int]:
        h, w = _hw(self.img_size if img_size is None else img_size)
        return (h // self.patch_size, w // self.patch_size)

    # The released sizes (spec a.3). `overrides` change any field, e.g. img_size=384.
    @classmethod
    def vit_large(cls, **overrides: Any) -> "EncoderConfig":
        return cls(**{**ENCODER_PRESETS["vit_large"], **overrides})

    @classmethod
    def vit_huge(cls, **overrides: Any) -> "EncoderConfig":
        return cls(**{**ENCODER_PRESETS["vit_huge"], **overrides})

    @classmethod
    def vit_giant(cls, **overrides: Any) -> "EncoderConfig":
        return cls(**{**ENCODER_PRESETS["vit_giant"], **overrides})

    @classmethod
    def vit_giant_384(cls, **overrides: Any) -> "EncoderConfig":
        return cls(**{**ENCODER_PRESETS["vit_giant_384"], **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "EncoderConfig":
        return cls(**{**ENCODER_PRESETS["vit_tiny"], **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "EncoderConfig":
        if name not in ENCODER_PRESETS:
            raise ConfigError(f"unknown encoder preset {name!r}; expected one of {sorted(ENCODER_PRESETS)}")
        return cls(**{**ENCODER_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# vit_giant is the released ViT-g (`vit_giant_xformers`: 22 heads of 64, MLP 1408*48/11 = 6144).
ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "vit_huge": dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
    "vit_giant": dict(embed_dim=1408, depth=40, num_heads=22, mlp_ratio=48 / 11),
    "vit_giant_384": dict(embed_dim=1408, depth=40, num_heads=22, mlp_ratio=48 / 11, img_size=384),
    # Not released: a tiny encoder for tests, CPU demos and benchmarks (64 px, 4x4 patches).
    "vit_tiny": dict(embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0, img_size=64, num_frames=16),
}


@dataclass(frozen=True)
class PredictorConfig:
    """The V-JEPA 2-AC block-causal action-conditioned predictor."""

    img_size: ImgSize = 256         # fixes the patch grid (16x16 at 256 px) and so tokens per frame
    patch_size: int = 16
    num_frames: int = 64            # the mask covers num_frames // tubelet_size steps (hub: 32)
    tubelet_size: int = 2
    embed_dim: int = 1408           # encoder width (input and output of the predictor)
    predictor_embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    action_embed_dim: int = 7       # [dxyz, drot (euler xyz), dgripper]
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    attn: str = "sdpa"

    def __post_init__(self) -> None:
        _check_common(self, self.predictor_embed_dim)
        if self.embed_dim < 1 or self.action_embed_dim < 1:
            raise ConfigError("embed_dim and action_embed_dim must be positive")
        if self.max_steps < 1:
            raise ConfigError(f"num_frames {self.num_frames} // tubelet_size {self.tubelet_size} must be >= 1 step")

    @property
    def head_dim(self) -> int:
        return self.predictor_embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.predictor_embed_dim * self.mlp_ratio)

    @property
    def grid(self) -> tuple[int, int]:
        h, w = _hw(self.img_size)
        return (h // self.patch_size, w // self.patch_size)

    @property
    def tokens_per_frame(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @property
    def max_steps(self) -> int:
        """Largest number of time steps the block-causal mask covers."""
        return self.num_frames // self.tubelet_size

    @classmethod
    def ac_vit_giant(cls, **overrides: Any) -> "PredictorConfig":
        return cls(**{**PREDICTOR_PRESETS["ac_vit_giant"], **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "PredictorConfig":
        return cls(**{**PREDICTOR_PRESETS["ac_tiny"], **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PredictorConfig":
        if name not in PREDICTOR_PRESETS:
            raise ConfigError(f"unknown predictor preset {name!r}; expected one of {sorted(PREDICTOR_PRESETS)}")
        return cls(**{**PREDICTOR_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PREDICTOR_PRESETS: dict[str, dict[str, Any]] = {
    "ac_vit_giant": dict(embed_dim=1408, predictor_embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
                         img_size=256, num_frames=64, tubelet_size=2, action_embed_dim=7),
    # Not released: pairs with the vit_tiny encoder (64 px -> 16 tokens per frame, up to 8 steps).
    "ac_tiny": dict(embed_dim=64, predictor_embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0,
                    img_size=64, num_frames=16, tubelet_size=2, action_embed_dim=7),
}


def config_from_dict(kind: str, spec: str | dict[str, Any]) -> EncoderConfig | PredictorConfig:
    """An encoder or predictor config from a preset name, {"preset": name, **overrides}, or a full
    field dict as `to_dict` writes it (JSON / YAML lists become the tuples they stand for)."""
    cls = {"encoder": EncoderConfig, "predictor": PredictorConfig}.get(kind)
    if cls is None:
        raise ConfigError(f"config kind must be 'encoder' or 'predictor', got {kind!r}")
    if isinstance(spec, str):
        return cls.from_preset(spec)
    if not isinstance(spec, dict):
        raise ConfigError(f"{kind} must be a preset name or a dict of {cls.__name__} fields, got {spec!r}")
    fields = dict(spec)
    preset = fields.pop("preset", None)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ConfigError(f"unknown {kind} fields {unknown}; expected 'preset' and a subset of {sorted(names)}")
    if isinstance(fields.get("img_size"), list):
        fields["img_size"] = tuple(fields["img_size"])
    return cls.from_preset(preset, **fields) if preset is not None else cls(**fields)
