"""Loading official V-JEPA 2 / 2-AC checkpoints (spec e) and our own safetensors files.

`.pt` files are read with `torch.load(weights_only=True)`: tensors and plain containers only,
never arbitrary pickled objects. The sub-dict is chosen by the model type (`encoder`,
`target_encoder`, `predictor`), `module.` / `backbone.` are stripped, and every key and shape is
checked before anything is loaded.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from vjepa2_ros.errors import CheckpointError
from vjepa2_ros.model.config import ENCODER_PRESETS, EncoderConfig, PredictorConfig

# Which sub-dicts hold which network, in order of preference. For planning with the AC model,
# its file's own `encoder` (= pretraining EMA target) is the right one (spec e, gotcha 12).
SUBDICT_KEYS = {"encoder": ("encoder", "target_encoder"), "predictor": ("predictor",)}
_STRIP = ("module.", "backbone.")


def _kind(model: nn.Module) -> str:
    from vjepa2_ros.model.encoder import VJEPA2Encoder
    from vjepa2_ros.model.predictor import ACPredictor
    if isinstance(model, VJEPA2Encoder):
        return "encoder"
    if isinstance(model, ACPredictor):
        return "predictor"
    raise CheckpointError(f"cannot load an official checkpoint into {type(model).__name__}; "
                          "expected VJEPA2Encoder or ACPredictor")


def read_checkpoint(path: str | Path) -> Mapping:
    """The top-level mapping of a `.pt` / `.pth` (weights only, memory-mapped) or `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            raw: Mapping = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file "
                                  f"(truncated or corrupt?): {e}") from None
    else:
        raw = _torch_load(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(raw).__name__}, expected a dict of tensors")
    return raw


def _torch_load(path: Path) -> Mapping:
    # mmap keeps an 11.7 GB AC file out of RAM until tensors are copied into the model; legacy
    # (non-zip) files cannot be mapped and are read whole.
    for mmap in (True, False):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain containers; "
                                  f"refusing to unpickle it (weights_only=True). Details: {str(e).splitlines()[0]}") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
            if mmap and "mmap" in str(e):
                continue
            raise CheckpointError(f"checkpoint {path} could not be read (truncated or corrupt?): "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    raise AssertionError("unreachable")


def read_state_dict(path: str | Path | Mapping, key: str | None = None, kind: str | None = None,
                    source: str | None = None) -> dict[str, torch.Tensor]:
    """One flat state dict from a checkpoint file (or its already-read top-level mapping).

    key: the sub-dict to take (e.g. "target_encoder"); kind: "encoder" or "predictor", used to
    choose the sub-dict when `key` is None. A flat file (tensors at the top level) is returned as is.
    Keys are cleaned of `module.` and `backbone.`.
    """
    raw = path if isinstance(path, Mapping) else read_checkpoint(path)
    return clean_keys(_select(raw, source or str(path if not isinstance(path, Mapping) else "checkpoint"), key, kind))


def _select(raw: Mapping, path: str, key: str | None, kind: str | None) -> Mapping:
    if key is not None:
        if key not in raw or not isinstance(raw[key], Mapping):
            raise CheckpointError(f"checkpoint {path} has no sub-dict {key!r}; top-level keys: "
                                  f"{sorted(map(str, raw))[:10]}")
        return raw[key]
    if all(isinstance(v, torch.Tensor) for v in raw.values()):
        return raw                                             # already flat
    for k in SUBDICT_KEYS.get(kind or "", ()):
        if isinstance(raw.get(k), Mapping):
            return raw[k]
    raise CheckpointError(f"checkpoint {path} has no {kind or 'model'} weights: expected one of "
                          f"{list(SUBDICT_KEYS.get(kind or '', SUBDICT_KEYS['encoder'] + SUBDICT_KEYS['predictor']))}, "
                          f"found top-level keys {sorted(map(str, raw))[:10]}")


def clean_keys(sd: Mapping) -> dict[str, torch.Tensor]:
    """Remove `module.` and `backbone.` anywhere in each key, as the hub loader does."""
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"checkpoint entry {k!r} is a {type(v).__name__}, expected a tensor")
        for s in _STRIP:
            k = k.replace(s, "")
        out[k] = v
    return out


def describe_encoder(sd: Mapping[str, torch.Tensor]) -> str:
    """Best guess of the encoder size a state dict holds, for error messages."""
    w = sd.get("patch_embed.proj.weight")
    if w is None:
        return "neither a V-JEPA 2 encoder nor an AC predictor"
    width = w.shape[0]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    names = [n for n, p in ENCODER_PRESETS.items() if p["embed_dim"] == width and p["depth"] == depth]
    return f"the encoder {names[0] if names else 'of unknown size'} (width {width}, depth {depth})"


def describe_model(model: nn.Module) -> str:
    cfg = getattr(model, "cfg", None)
    if isinstance(cfg, EncoderConfig):
        names = [n for n, p in ENCODER_PRESETS.items() if p["embed_dim"] == cfg.embed_dim and p["depth"] == cfg.depth]
        return f"{names[0] if names else 'a custom encoder'} (width {cfg.embed_dim}, depth {cfg.depth})"
    if isinstance(cfg, PredictorConfig):
        return (f"an AC predictor (encoder width {cfg.embed_dim}, predictor width {cfg.predictor_embed_dim}, "
                f"depth {cfg.depth})")
    return type(model).__name__


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise a CheckpointError listing the first missing, unexpected and mismatched names."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or mismatched):
        return
    if "predictor_embed.weight" in sd:
        w = sd["predictor_embed.weight"]
        depth = len({k.split(".")[1] for k in sd if k.startswith("predictor_blocks.")})
        found = f"an AC predictor (encoder width {w.shape[1]}, predictor width {w.shape[0]}, depth {depth})"
    else:
        found = describe_encoder(sd)
    lines = [f"{source} does not fit the model: expected {describe_model(model)}, the file holds {found}."]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", mismatched)):
        if items:
            lines.append(f"  {len(items)} {label}, first: {', '.join(items[:5])}")
    raise CheckpointError("\n".join(lines))


def load_official_checkpoint(path: str | Path | Mapping, model: nn.Module, key: str | None = None,
                             assign: bool = False) -> nn.Module:
    """Load an official checkpoint (or our safetensors) into `model` with strict key/shape checks.

    path: a file, or the mapping `read_checkpoint` returned (to read a large file once for both
    networks). model: a VJEPA2Encoder (takes `encoder`, else `target_encoder`) or an ACPredictor
    (takes `predictor`); key overrides the sub-dict. Tensors are cast to the model's dtype, or with
    assign=True become the model's parameters (for a model built on the `meta` device: no memory
    or time is spent on weights that are overwritten anyway). Returns model.
    """
    source = "checkpoint" if isinstance(path, Mapping) else f"checkpoint {path}"
    sd = read_state_dict(path, key=key, kind=_kind(model), source=source)
    check_state_dict(model, sd, source=source)
    model.load_state_dict(sd, strict=True, assign=assign)
    return model


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 23) -> str:
    """Hex sha256 of a file, read in chunks (weights, engines, manifests)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()
