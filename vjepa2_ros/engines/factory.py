"""One entry point for every runtime: `open_runtime(RuntimeConfig(...))`.

The ROS node and the CLI describe the runtime they want as data; this module checks the
description and opens it. ONNX Runtime and TensorRT are imported only when chosen.

    open_runtime(RuntimeConfig(kind="torch", checkpoint="models/vjepa2-ac-vitg.pt", device="cuda"))
    open_runtime(RuntimeConfig(kind="onnxruntime", engine_dir="models/engines"))          # CPU
    open_runtime(RuntimeConfig(kind="tensorrt", engine_dir="models/engines", device="cuda", precision="bfloat16"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from vjepa2_ros.engines.manifest import (PRECISIONS, Expected, Manifest, artifact_name, check_manifest, io_specs,
                                         read_manifest, weights_id)
from vjepa2_ros.engines.runtime import Runtime
from vjepa2_ros.errors import ConfigError, EngineError
from vjepa2_ros.model.card import read_model_card
from vjepa2_ros.model.config import EncoderConfig, PredictorConfig, config_from_dict

KINDS = ("torch", "onnxruntime", "tensorrt")
ORT_PROVIDERS = ("cpu", "cuda", "tensorrt")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class RuntimeConfig:
    """Which runtime runs the encoder and predictor, on what, from which files."""

    kind: str = "torch"                           # "torch" | "onnxruntime" | "tensorrt"
    device: str = "cpu"                           # "cpu" | "cuda" | "cuda:N"
    precision: str = "float32"                    # "float32" | "float16" | "bfloat16"
    checkpoint: str | None = None                 # AC checkpoint. torch: the weights (None = seeded random init);
                                                  # onnxruntime/tensorrt: if given, the engines must come from it
    encoder_checkpoint: str | None = None         # a separate encoder file (default: the AC file's encoder)
    engine_dir: str | None = None                 # onnxruntime/tensorrt: the directory export/build-engines wrote
    encoder_cfg: EncoderConfig | None = None      # torch: default ViT-g; engines: if given, must match the manifests
    predictor_cfg: PredictorConfig | None = None  # torch: default the released AC ViT-g predictor; as above
    onnx_provider: str | None = None              # onnxruntime: "cpu" | "cuda" | "tensorrt" (default: from device)
    compile: bool = False                         # torch: torch.compile the encoder and predictor
    cuda_graphs: bool = False                     # torch on CUDA: capture predict() per input shape
    seed: int = 0                                 # torch without checkpoint: random-init seed
    allow_random: bool = False                    # torch without checkpoint: allow random networks over
                                                  # model.factory.RANDOM_PARAMETER_LIMIT (benchmarks)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"runtime kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.kind != "torch" and self.engine_dir is None:
            raise ConfigError(f"the {self.kind} runtime needs engine_dir (made by `vjepa2-ros export`"
                              f"{'' if self.kind == 'onnxruntime' else ' and `vjepa2-ros build-engines`'})")
        if self.kind == "tensorrt" and not self.device.startswith("cuda"):
            raise ConfigError(f"the tensorrt runtime runs on a CUDA device, got device {self.device!r}")
        if self.onnx_provider is not None:
            if self.kind != "onnxruntime":
                raise ConfigError(f"onnx_provider applies to the onnxruntime runtime, not {self.kind!r}")
            if self.onnx_provider not in ORT_PROVIDERS:
                raise ConfigError(f"onnx_provider must be one of {ORT_PROVIDERS}, got {self.onnx_provider!r}")
            if (self.onnx_provider == "cpu") != (self.device == "cpu"):
                raise ConfigError(f"onnx_provider {self.onnx_provider!r} does not run on device {self.device!r}")
        if (self.compile or self.cuda_graphs) and self.kind != "torch":
            raise ConfigError(f"compile / cuda_graphs apply to the torch runtime, not {self.kind!r}")
        if self.cuda_graphs and not self.device.startswith("cuda"):
            raise ConfigError(f"cuda_graphs needs a CUDA device, got device {self.device!r}")
        if self.cuda_graphs and self.compile:
            raise ConfigError("choose compile or cuda_graphs, not both (capture an eager model, or let "
                              "torch.compile own its graphs)")
        if self.kind == "torch" and self.engine_dir is not None:
            raise ConfigError("the torch runtime reads checkpoint, not engine_dir")

    @property
    def provider(self) -> str:
        """The ONNX Runtime provider that must run the graphs."""
        return self.onnx_provider or ("cpu" if self.device == "cpu" else "cuda")

    @property
    def dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[self.precision]


def runtime_config_from_card(card: str | Path, **changes: Any) -> RuntimeConfig:
    """The RuntimeConfig of a model card (model.json, written by `vjepa2-ros pipeline`'s ship stage;
    see model.card): its networks and the weight files beside it, checked against the card's sha256.
    `changes` set other fields (kind, device, ...)."""
    c = read_model_card(card)
    return RuntimeConfig(checkpoint=str(c.checkpoint), encoder_checkpoint=str(c.encoder_checkpoint),
                         encoder_cfg=c.encoder_config(), predictor_cfg=c.predictor_config(), **changes)


def _open_torch(cfg: RuntimeConfig) -> Runtime:
    from vjepa2_ros.engines.torch_runtime import TorchRuntime
    from vjepa2_ros.model.factory import build_model, check_random_weights
    encoder_cfg = cfg.encoder_cfg or EncoderConfig.vit_giant()
    predictor_cfg = cfg.predictor_cfg or PredictorConfig.ac_vit_giant()
    check_random_weights(encoder_cfg, predictor_cfg, cfg.checkpoint, cfg.encoder_checkpoint, cfg.allow_random)
    encoder, predictor = build_model(encoder_cfg, predictor_cfg, checkpoint=cfg.checkpoint,
                                     encoder_checkpoint=cfg.encoder_checkpoint, seed=cfg.seed)
    return TorchRuntime(encoder, predictor, cfg.device, cfg.dtype, compile=cfg.compile, cuda_graphs=cfg.cuda_graphs)


def _open_onnxruntime(cfg: RuntimeConfig) -> Runtime:
    from vjepa2_ros.engines.ort_runtime import OrtRuntime
    return OrtRuntime(cfg)


def _open_tensorrt(cfg: RuntimeConfig) -> Runtime:
    from vjepa2_ros.engines.trt_runtime import TrtRuntime
    return TrtRuntime(cfg)


OPENERS: dict[str, Callable[[RuntimeConfig], Runtime]] = {
    "torch": _open_torch, "onnxruntime": _open_onnxruntime, "tensorrt": _open_tensorrt,
}


def open_runtime(cfg: RuntimeConfig) -> Runtime:
    """The runtime `cfg` describes, loaded and checked."""
    return OPENERS[cfg.kind](cfg)


@dataclass(frozen=True)
class Artifacts:
    """The checked artifacts of one precision and format in an engine directory."""

    encoder: Path
    predictors: dict[int, Path]                  # steps T -> file
    step_predictors: dict[int, Path]             # step t -> KV-cached step graph (ONNX only; may be empty)
    encoder_cfg: EncoderConfig
    predictor_cfg: PredictorConfig
    manifests: dict[Path, Manifest]              # file -> its checked manifest


def load_artifacts(cfg: RuntimeConfig, fmt: str, tools: dict[str, str] | None = None,
                   gpu: dict[str, str] | None = None) -> Artifacts:
    """Find the encoder and predictor files of `fmt` ("onnx" | "tensorrt") and check their manifests.

    Checked: file size and sha256, network, precision, I/O names/dtypes/shapes, that all
    predictors are one model and fit the encoder, and, where given, the configs and checkpoints
    in `cfg`, the tool versions in `tools` and the GPU in `gpu`.
    """
    directory = Path(cfg.engine_dir)
    command = "vjepa2-ros export" if fmt == "onnx" else "vjepa2-ros build-engines"
    if not directory.is_dir():
        raise EngineError(f"engine directory {directory} does not exist; create it with `{command}`")
    encoder = directory / artifact_name("encoder", cfg.precision, None, fmt)
    if not encoder.is_file():
        found = sorted(p.name for p in directory.iterdir() if p.suffix in (".onnx", ".engine"))
        raise EngineError(f"{directory} has no {encoder.name} (found {found or 'nothing'}); create it with "
                          f"`{command} --precision {cfg.precision}`")
    pattern = artifact_name("predictor", cfg.precision, 0, fmt).replace("T0", "T*")
    predictors = {int(p.name.split("-")[1][1:]): p for p in directory.glob(pattern)}
    step_pattern = artifact_name("predictor_step", cfg.precision, 0, fmt).replace("T0", "T*")
    step_predictors = {int(p.name.split("-")[2][1:]): p for p in directory.glob(step_pattern)} if fmt == "onnx" else {}
    if not predictors:
        raise EngineError(f"{directory} has no predictor files {pattern}; create them with `{command}`")
    weights = None if cfg.checkpoint is None else weights_id(cfg.checkpoint)
    manifests = {}
    enc_m = read_manifest(encoder)
    encoder_cfg = config_from_dict("encoder", enc_m.model)
    # The encoder's weights come from its own file when one was given.
    enc_weights = weights_id(cfg.encoder_checkpoint) if cfg.encoder_checkpoint else weights
    check_manifest(enc_m, Expected("encoder", None if cfg.encoder_cfg is None else cfg.encoder_cfg.to_dict(),
                                   enc_weights, cfg.precision, None, *io_specs("encoder", encoder_cfg, cfg.precision),
                                   tools or {}, gpu), encoder)
    manifests[encoder] = enc_m
    first: Manifest | None = None                 # all predictor files: one model, one set of weights
    jobs = [("predictor", t, p) for t, p in sorted(predictors.items())] + \
        [("predictor_step", t, p) for t, p in sorted(step_predictors.items())]
    for network, steps, path in jobs:
        m = read_manifest(path)
        predictor_cfg = config_from_dict("predictor", m.model)
        wanted_model = cfg.predictor_cfg.to_dict() if cfg.predictor_cfg else (first.model if first else None)
        wanted_weights = weights or (first.weights if first else None)
        check_manifest(m, Expected(network, wanted_model, wanted_weights, cfg.precision, steps,
                                   *io_specs(network, predictor_cfg, cfg.precision, steps), tools or {}, gpu), path)
        manifests[path] = m
        first = first or m
    if predictor_cfg.embed_dim != encoder_cfg.embed_dim or predictor_cfg.grid != encoder_cfg.grid():
        raise EngineError(f"{directory}: the predictor (width {predictor_cfg.embed_dim}, grid {predictor_cfg.grid}) "
                          f"does not fit the encoder (width {encoder_cfg.embed_dim}, grid {encoder_cfg.grid()}); "
                          f"re-export both with `{command}`")
    return Artifacts(encoder, predictors, step_predictors, encoder_cfg, predictor_cfg, manifests)


def pick_predictor(graphs: dict[int, Any], z: torch.Tensor, tokens_per_frame: int, fmt: str) -> Any:
    """The fixed-T graph or engine for z [S, T*n, D], or an EngineError listing the T available."""
    steps = z.shape[1] // tokens_per_frame if isinstance(z, torch.Tensor) and z.dim() == 3 else None
    if steps not in graphs:
        then = " then `vjepa2-ros build-engines`" if fmt == "tensorrt" else ""
        raise EngineError(f"no predictor for T={steps} steps (z {tuple(getattr(z, 'shape', ()))}, {tokens_per_frame} "
                          f"tokens per frame); this engine directory has T in {sorted(graphs)}. Make more with "
                          f"`vjepa2-ros export --steps ...`{then}")
    return graphs[steps]
