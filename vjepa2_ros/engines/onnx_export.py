"""ONNX export of the encoder and the fixed-T predictor, each with a manifest.

The graphs compute exactly the torch modules (raw encoder tokens, raw predictions; the caller
applies `normalize_latents`). The attention kernel is the explicit "math" one: the fused SDPA
exports too, but as a NaN-guarded decomposition, and newer ONNX attention ops break the
TensorRT execution provider, hence opset 18 by default. Precision lives in the graph (TensorRT
11 networks are strongly typed): a float16 / bfloat16 export has that dtype for weights,
activations and I/O.

  encoder-<precision>.onnx          images [batch, 3, H, W] -> tokens [batch, N, D]
  predictor-T<T>-<precision>.onnx   z [samples, T*n, D], actions/states [samples, T, 7] -> predictions [samples, T*n, D]
  predictor-step-T<t>-<precision>.onnx  (optional) step t of a KV-cached rollout, see `manifest.io_specs`
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vjepa2_ros.engines.manifest import (PRECISIONS, Manifest, TensorSpec, artifact_name, file_entries, io_specs,
                                         tool_versions, write_manifest)
from vjepa2_ros.errors import ConfigError, EngineError
from vjepa2_ros.model.encoder import VJEPA2Encoder
from vjepa2_ros.model.predictor import COND_TOKENS, ACPredictor, block_causal_mask
from vjepa2_ros.model.rope import grid_positions, rope_angles, rope_tables

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MAX_IR_VERSION = 10          # read by onnxruntime >= 1.17 and TensorRT 10's parser
PROTOBUF_LIMIT_BYTES = 2_000_000_000   # larger graphs keep their weights in `<name>.onnx.data`


@dataclass(frozen=True)
class ExportConfig:
    precision: str = "float32"           # graph dtype: weights, activations, inputs and outputs
    steps: tuple[int, ...] = (1, 2)      # predictor graphs to write, one per number of time steps T
    opset: int = 18                      # 18: newer attention ops break the TensorRT execution provider
    step_graphs: bool = False            # also KV-cached step graphs for steps 1..max(steps) (ONNX Runtime)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.steps or any(not isinstance(t, int) or t < 1 for t in self.steps):
            raise ConfigError(f"steps must be a non-empty tuple of positive ints, got {self.steps!r}")
        if not 17 <= self.opset <= 23:
            raise ConfigError(f"opset must be in [17, 23], got {self.opset}")


def _math_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The same network built with the explicit attention kernel, weights copied, in `dtype`."""
    cfg = dataclasses.replace(module.cfg, attn="math")
    copy = type(module)(cfg, init=False)
    copy.load_state_dict(module.state_dict(), strict=True)
    return copy.to(device="cpu", dtype=dtype).eval().requires_grad_(False)


class EncoderGraph(nn.Module):
    """The encoder as exported: images [B, 3, H, W] at the config's size -> tokens [B, N, D].

    Same blocks and weights as `VJEPA2Encoder.forward`; the RoPE tables of the fixed grid are
    computed once in the graph dtype and stored as constants (ONNX Sin/Cos take no bfloat16).
    """

    def __init__(self, encoder: VJEPA2Encoder, dtype: torch.dtype) -> None:
        super().__init__()
        self.net = _math_copy(encoder, dtype)
        cfg = self.net.cfg
        gh, gw = cfg.grid()
        t, h, w = grid_positions(1, gh, gw)
        cos, sin = rope_tables(rope_angles(cfg.head_dim, dtype, t, h, w))         # [N, hd] each
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        video = images.unsqueeze(2).expand(-1, -1, self.net.cfg.tubelet_size, -1, -1)   # B, 3, tubelet, H, W
        x = self.net.patch_embed(video)                                             # B, N, D
        for block in self.net.blocks:
            x, _ = block(x, (self.cos, self.sin))
        return self.net.norm(x)


class PredictorGraph(nn.Module):
    """The predictor as exported for a fixed number of steps T (`ACPredictor.forward`, constants baked).

    z [S, T*n, D], actions [S, T, 7], states [S, T, 7] -> predictions [S, T*n, D].
    """

    def __init__(self, predictor: ACPredictor, steps: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.net = _math_copy(predictor, dtype)
        self.steps = steps
        cos, sin = self.net._rope(0, steps, dtype, torch.device("cpu"))          # [T*(2+n), hd] each
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        self.register_buffer("mask", block_causal_mask(steps, COND_TOKENS + self.net.cfg.tokens_per_frame))

    def forward(self, z: torch.Tensor, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        x = self.net._embed(z, actions, states)                                     # S, T*(2+n), pd
        for block in self.net.predictor_blocks:
            x, _ = block(x, (self.cos, self.sin), self.mask)
        return self.net._head(x, self.steps)                                        # S, T*n, D


class PredictorStepGraph(nn.Module):
    """Step t (1-based) of an incremental rollout, on the keys/values of steps 1..t-1 (`ACPredictor.forward_step`).

    z [S, n, D], action/state [S, 7], past_k/past_v [depth, S or 1, heads, (t-1)*(2+n), hd]
    -> predictions [S, n, D], present_k/present_v [depth, S, heads, t*(2+n), hd].
    """

    def __init__(self, predictor: ACPredictor, steps: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.net = _math_copy(predictor, dtype)
        cos, sin = self.net._rope(steps - 1, 1, dtype, torch.device("cpu"))      # [2+n, hd] each, at step t-1
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def forward(self, z: torch.Tensor, action: torch.Tensor, state: torch.Tensor,
                past_k: torch.Tensor | None = None, past_v: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.net._embed(z, action.unsqueeze(1), state.unsqueeze(1))           # S, 2+n, pd
        keys, values = [], []
        for i, block in enumerate(self.net.predictor_blocks):
            past = None if past_k is None else (past_k[i], past_v[i])               # broadcast from 1 sample
            x, (k, v) = block(x, (self.cos, self.sin), None, past)                  # k, v: S, heads, t*(2+n), hd
            keys.append(k)
            values.append(v)
        return self.net._head(x, 1), torch.stack(keys), torch.stack(values)


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: tuple[TensorSpec, ...],
            outputs: tuple[TensorSpec, ...], path: Path, opset: int) -> list[str]:
    """Trace `module` to `path`; returns the file names written (the graph, maybe its external data)."""
    import onnx

    names_in, names_out = [t.name for t in inputs], [t.name for t in outputs]
    dynamic_axes = {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in inputs + outputs}
    param_bytes = sum(p.numel() * p.element_size() for p in module.state_dict().values())
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")    # TracerWarnings: the input checks are constants per graph
            torch.onnx.export(module, example, str(raw), dynamo=False, opset_version=opset,
                              input_names=names_in, output_names=names_out, do_constant_folding=True,
                              dynamic_axes=dynamic_axes)
        model = onnx.load(str(raw), load_external_data=True)
        model.ir_version = min(model.ir_version, MAX_IR_VERSION)
        model.producer_name = "vjepa2_ros"
        for value, spec in zip(list(model.graph.input) + list(model.graph.output), inputs + outputs):
            for dim, size in zip(value.type.tensor_type.shape.dim, spec.shape):   # state every size the tracer lost
                if isinstance(size, int):
                    dim.dim_value = size
                else:
                    dim.dim_param = size
        files = [path.name]
        if param_bytes > PROTOBUF_LIMIT_BYTES:
            files.append(path.name + ".data")
            for f in files:
                (path.parent / f).unlink(missing_ok=True)
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=files[1], size_threshold=1024)
        else:
            onnx.save_model(model, str(path))
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise EngineError(f"exported graph {path} fails onnx.checker: {e}") from None
    return files


def export_encoder(encoder: VJEPA2Encoder, out_dir: str | Path, cfg: ExportConfig, weights: str,
                   rebuild: str = "") -> Path:
    """Write encoder-<precision>.onnx and its manifest; returns the graph's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[cfg.precision]
    inputs, outputs = io_specs("encoder", encoder.cfg, cfg.precision)
    example = torch.randn(2, *inputs[0].shape[1:]).to(dtype)                 # batch 2: keeps the axis dynamic
    path = out_dir / artifact_name("encoder", cfg.precision, None, "onnx")
    files = _export(EncoderGraph(encoder, dtype), (example,), inputs, outputs, path, cfg.opset)
    _write(path, files, "encoder", encoder.cfg.to_dict(), weights, cfg, None, inputs, outputs, rebuild)
    return path


def export_predictor(predictor: ACPredictor, steps: int, out_dir: str | Path, cfg: ExportConfig, weights: str,
                     rebuild: str = "") -> Path:
    """Write predictor-T<steps>-<precision>.onnx and its manifest; returns the graph's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[cfg.precision]
    inputs, outputs = io_specs("predictor", predictor.cfg, cfg.precision, steps)
    example = tuple(torch.randn(2, *t.shape[1:]).to(dtype) for t in inputs)   # samples 2: keeps the axis dynamic
    path = out_dir / artifact_name("predictor", cfg.precision, steps, "onnx")
    files = _export(PredictorGraph(predictor, steps, dtype), example, inputs, outputs, path, cfg.opset)
    _write(path, files, "predictor", predictor.cfg.to_dict(), weights, cfg, steps, inputs, outputs, rebuild)
    return path


def export_predictor_step(predictor: ACPredictor, steps: int, out_dir: str | Path, cfg: ExportConfig, weights: str,
                          rebuild: str = "") -> Path:
    """Write predictor-step-T<steps>-<precision>.onnx and its manifest; returns the graph's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[cfg.precision]
    inputs, outputs = io_specs("predictor_step", predictor.cfg, cfg.precision, steps)
    # samples 3, past samples 2: distinct sizes keep both axes dynamic (the graph broadcasts a past of 1)
    sizes = {"samples": 3, "past_samples": 2}
    example = tuple(torch.randn(*(sizes.get(d, d) for d in t.shape)).to(dtype) for t in inputs)
    if steps > 1:
        example = example[:3] + tuple(t[:, :1] for t in example[3:])         # a shared past: 1 sample
    path = out_dir / artifact_name("predictor_step", cfg.precision, steps, "onnx")
    files = _export(PredictorStepGraph(predictor, steps, dtype), example, inputs, outputs, path, cfg.opset)
    _write(path, files, "predictor_step", predictor.cfg.to_dict(), weights, cfg, steps, inputs, outputs, rebuild)
    return path


def _write(path: Path, files: list[str], network: str, model: dict, weights: str, cfg: ExportConfig,
           steps: int | None, inputs: tuple, outputs: tuple, rebuild: str) -> None:
    manifest = Manifest(format="onnx", network=network, model=model, weights=weights, precision=cfg.precision,
                        steps=steps, inputs=inputs, outputs=outputs, file=path.name,
                        files=file_entries(path.parent, files),
                        tools={**tool_versions("onnx"), "opset": str(cfg.opset)},
                        rebuild=rebuild or f"vjepa2-ros export --out {path.parent} --precision {cfg.precision}")
    write_manifest(manifest, path.parent)


def export_onnx(encoder: VJEPA2Encoder, predictor: ACPredictor, out_dir: str | Path, cfg: ExportConfig,
                weights: str, encoder_weights: str | None = None, rebuild: str = "",
                progress: bool = False) -> list[Path]:
    """Encoder and one predictor graph per `cfg.steps`, with manifests. Returns the graph paths.

    weights: `manifest.weights_id` of the AC checkpoint; encoder_weights: that of a separate
    encoder file (default: the AC checkpoint's encoder, i.e. `weights`).
    """
    from tqdm import tqdm

    jobs = [("encoder", None)] + [("predictor", t) for t in cfg.steps]
    if cfg.step_graphs:
        jobs += [("predictor_step", t) for t in range(1, max(cfg.steps) + 1)]
    paths = []
    for network, steps in tqdm(jobs, desc="export ONNX", unit="graph", disable=not progress):
        if network == "encoder":
            paths.append(export_encoder(encoder, out_dir, cfg, encoder_weights or weights, rebuild))
        elif network == "predictor":
            paths.append(export_predictor(predictor, steps, out_dir, cfg, weights, rebuild))
        else:
            paths.append(export_predictor_step(predictor, steps, out_dir, cfg, weights, rebuild))
    return paths

