"""The training configuration: one frozen dataclass, read from YAML and validated.

Defaults are the official AC post-training recipe (spec c): AdamW (0.9, 0.999, 1e-8), weight
decay 0.04 on >=2-D weights, warmup 4,500 steps from 7.5e-5 to 4.25e-4, constant, linear anneal
to 0 over the last 4,500 of 94,500 steps, 8 clips of 8 frames per process, 2 rollout steps,
bf16 autocast, seed 239. Paths are taken relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.config import EncoderConfig, PredictorConfig, config_from_dict

CROP_MODES = ("inference", "droid_train")
DEVICES = ("auto", "cpu", "cuda")
CACHE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class TrainConfig:
    # -- data ----------------------------------------------------------------------------------
    droid: tuple[str, ...] = ()           # DROID raw roots (scanned) or list files (one episode dir a line)
    bags: tuple[str, ...] = ()            # rosbag2 bag directories recorded at the station
    droid_camera: str = "left"            # DROID exterior view: "left" or "right" (metadata *_mp4_path)
    bag_camera_topic: str | None = None        # Image / CompressedImage topic; None: the recorder's default
    bag_joint_states_topic: str | None = None  # arm joints -> forward kinematics -> flange; None: the default
    bag_arm: str = "panda"                # kinematics: "panda" | "fr3"
    clip_frames: int = 8                  # frames per training clip (official dataset_fpcs 8)
    step_s: float = 0.25                  # seconds between clip frames (4 Hz; see spec i on the time base)
    # "inference": the planner's centre square crop, so the predictor is trained on exactly the
    # latents it plans with; "droid_train": the official training crop (H x 1.35H, squashed).
    crop: str = "inference"
    roi: tuple[int, int, int, int] | None = None   # (x, y, width, height) camera crop applied first
    # -- model ---------------------------------------------------------------------------------
    encoder: dict[str, Any] = field(default_factory=lambda: {"preset": "vit_giant"})
    predictor: dict[str, Any] = field(default_factory=lambda: {"preset": "ac_vit_giant"})
    encoder_checkpoint: str | None = None # frozen encoder weights (vitg.pt / the AC file); None = random
    init_from: str = "scratch"            # "scratch" (official init), "resume" (out_dir checkpoint) or a
                                          # predictor checkpoint to fine-tune (official AC .pt or safetensors)
    # -- optimisation --------------------------------------------------------------------------
    steps: int = 94_500                   # optimiser steps in total
    batch_size: int = 8                   # clips per process per step (global = batch_size * world size)
    lr: float = 4.25e-4                   # peak learning rate
    lr_start: float = 7.5e-5              # learning rate at step 0
    lr_final: float = 0.0                 # learning rate after the anneal
    warmup_steps: int = 4_500
    anneal_steps: int = 4_500
    weight_decay: float = 0.04            # on >= 2-D weights only
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = None        # max global grad norm; None = off (the official recipe does not clip)
    auto_steps: int = 2                   # rollout steps in the loss
    bf16: bool = True                     # bf16 autocast on CUDA (ignored on CPU)
    activation_checkpointing: bool = False
    # -- data pipeline -------------------------------------------------------------------------
    cache_latents: bool = False           # encode every frame once (frozen encoder), train on memory-mapped latents
    cache_dir: str | None = None          # default: <out_dir>/latents
    cache_dtype: str = "float16"          # latents on disk
    num_workers: int = 0                  # DataLoader worker processes
    # -- run -----------------------------------------------------------------------------------
    out_dir: str = "runs/train"
    seed: int = 239
    device: str = "auto"                  # "auto" = cuda when available
    log_every: int = 10                   # steps between CSV/TensorBoard rows
    ckpt_every: int = 1000                # steps between checkpoints (and one at the end)
    tensorboard: bool = True              # needs the `tensorboard` package; skipped with a note if absent
    # -- pipeline only (`vjepa2-ros pipeline`; `train` ignores them) -----------------------------
    # Record simulated episodes into the droid folders first: {seeds: [one per droid folder],
    # episodes: per folder, steps: model steps per episode, size: "HxW"} (see `vjepa2-ros sim record`).
    sim_record: dict[str, Any] | None = None
    ship_dir: str | None = None           # copy the trained weights and a model card (model.json) here

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise ConfigError(f"train config: {name} must be an int >= {minimum}, got {v!r}")

        for name in ("clip_frames", "steps", "batch_size", "log_every", "ckpt_every", "auto_steps"):
            positive_int(name, 2 if name == "clip_frames" else 1)
        for name in ("warmup_steps", "anneal_steps", "num_workers", "seed"):
            positive_int(name, 0)
        if self.auto_steps > self.clip_frames - 1:
            raise ConfigError(f"train config: auto_steps must be in 1..clip_frames-1 = {self.clip_frames - 1}, "
                              f"got {self.auto_steps}")
        if self.warmup_steps + self.anneal_steps > self.steps:
            raise ConfigError(f"train config: warmup_steps + anneal_steps ({self.warmup_steps} + {self.anneal_steps}) "
                              f"must not exceed steps ({self.steps})")
        for name in ("step_s", "lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"train config: {name} must be a positive number, got {v!r}")
        for name in ("lr_start", "lr_final", "weight_decay", "eps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"train config: {name} must be a number >= 0, got {v!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train config: betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"train config: grad_clip must be > 0 or null (off), got {self.grad_clip!r}")
        for name, allowed in (("crop", CROP_MODES), ("device", DEVICES), ("cache_dtype", CACHE_DTYPES),
                              ("droid_camera", ("left", "right")), ("bag_arm", ("panda", "fr3"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"train config: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.init_from not in ("scratch", "resume") and not Path(self.init_from).is_file():
            raise ConfigError(f"train config: init_from must be 'scratch', 'resume' or an existing checkpoint "
                              f"file, got {self.init_from!r}")
        if self.encoder_checkpoint is not None and not Path(self.encoder_checkpoint).is_file():
            raise ConfigError(f"train config: encoder_checkpoint {self.encoder_checkpoint!r} is not a file")
        if self.roi is not None and (len(self.roi) != 4 or any(int(v) != v or v < 0 for v in self.roi)):
            raise ConfigError(f"train config: roi must be (x, y, width, height) integers >= 0, got {self.roi!r}")
        if self.sim_record is not None:
            self.sim_record_jobs()
        enc, pred = self.encoder_config(), self.predictor_config()
        if pred.embed_dim != enc.embed_dim or pred.grid != enc.grid():
            raise ConfigError(f"train config: predictor (embed_dim {pred.embed_dim}, grid {pred.grid}) does not fit "
                              f"the encoder (embed_dim {enc.embed_dim}, grid {enc.grid()})")
        if self.clip_frames > pred.max_steps:
            raise ConfigError(f"train config: clip_frames {self.clip_frames} exceeds the predictor's "
                              f"{pred.max_steps} steps (num_frames // tubelet_size)")

    def check_encoder_weights(self) -> None:
        """Before training: a frozen encoder without weights is a seeded random one, fine for the
        project's small sim encoders, meaningless (and hours per epoch on a CPU) at ViT-L/g size."""
        from vjepa2_ros.model.factory import RANDOM_PARAMETER_LIMIT, parameter_count
        if self.encoder_checkpoint is not None:
            return
        n = parameter_count(self.encoder_config())
        if n > RANDOM_PARAMETER_LIMIT:
            raise ConfigError(f"train config: encoder_checkpoint is null, so the frozen encoder would be a randomly "
                              f"initialised {n / 1e6:,.0f} M-parameter ViT; set encoder_checkpoint to the official "
                              f"encoder weights (the ViT checkpoint or the AC checkpoint, whose encoder is used)")

    # -- derived -------------------------------------------------------------------------------
    def encoder_config(self) -> EncoderConfig:
        return _network("encoder", self.encoder)

    def predictor_config(self) -> PredictorConfig:
        return _network("predictor", self.predictor)

    @property
    def crop_size(self) -> int:
        h, w = self.encoder_config().grid()
        if h != w:
            raise ConfigError(f"train config: the encoder img_size must be square for training crops, got grid {h}x{w}")
        return h * self.encoder_config().patch_size

    def sim_record_jobs(self) -> list[dict[str, Any]]:
        """sim_record as one `generate_episodes` job per droid folder: {"out": folder, **record_params}."""
        rec = self.sim_record
        keys = {"seeds", "episodes", "steps", "size"}
        if not isinstance(rec, dict) or set(rec) != keys:
            raise ConfigError(f"train config: sim_record must be a mapping with exactly the keys {sorted(keys)}, "
                              f"got {rec!r}")
        seeds = rec["seeds"]
        if not isinstance(seeds, (list, tuple)) or len(seeds) != len(self.droid) or \
                not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise ConfigError(f"train config: sim_record.seeds must be one int >= 0 per droid folder "
                              f"({len(self.droid)}), got {seeds!r}")
        for name in ("episodes", "steps"):
            if not isinstance(rec[name], int) or rec[name] < (1 if name == "episodes" else 2):
                raise ConfigError(f"train config: sim_record.{name} must be an int >= "
                                  f"{1 if name == 'episodes' else 2}, got {rec[name]!r}")
        from vjepa2_ros.data.generate import record_params
        from vjepa2_ros.data.video import parse_size
        size = parse_size(str(rec["size"]))
        return [{"out": folder, **record_params(rec["episodes"], rec["steps"], seed, self.step_s, size)}
                for folder, seed in zip(self.droid, seeds)]

    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.out_dir) / "latents"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"train config must be a mapping of fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"train config: unknown fields {unknown}; expected a subset of {sorted(names)}")
        d = dict(d)
        for name in ("droid", "bags", "betas", "roi"):
            if isinstance(d.get(name), str):
                d[name] = (d[name],)
            if isinstance(d.get(name), list):
                d[name] = tuple(d[name])
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        import yaml
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"train config {path} does not exist")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"train config {path} is not valid YAML: {e}") from None
        return cls.from_dict(d)


def _network(kind: str, spec: dict[str, Any]) -> Any:
    """{"preset": name, **overrides} or a full field dict -> EncoderConfig / PredictorConfig."""
    if not isinstance(spec, dict):
        raise ConfigError(f"train config: {kind} must be a mapping like {{preset: ..., field: value}}, got {spec!r}")
    try:
        return config_from_dict(kind, spec)
    except ConfigError as e:
        raise ConfigError(f"train config: {e}") from None


def make_example_config(out_dir: str | Path, droid: tuple[str, ...] = (), **changes: Any) -> TrainConfig:
    """A tiny run for tests, benchmarks and CPU demos: 64 px tiny encoder and predictor, 6 steps
    of 4 clips, short warmup, no anneal, a CSV row every step."""
    base: dict[str, Any] = dict(droid=tuple(str(d) for d in droid), encoder={"preset": "vit_tiny"},
                                predictor={"preset": "ac_tiny"}, steps=6, batch_size=4, lr=1e-3, lr_start=1e-4,
                                warmup_steps=2, anneal_steps=0, log_every=1, ckpt_every=100, out_dir=str(out_dir),
                                tensorboard=False, seed=0)
    return TrainConfig(**{**base, **changes})
