"""Training clips: windows of `clip_frames` consecutive model steps from recorded episodes.

Two datasets over the same clip index:
- `EpisodeClips` reads episodes on demand and returns preprocessed frames; the frozen encoder
  runs in every training step ("online").
- `LatentClips` reads latents that `build_latent_cache` wrote once per episode (the encoder is
  frozen, so they never change): one memory-mapped `.npy` per episode plus `index.json`.
Files that cannot be read are skipped, counted and named in a `DataReport`; a run in which
nothing is usable stops with a DataError that lists what went wrong.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from vjepa2_ros.data.episode import Episode
from vjepa2_ros.errors import ConfigError, DataError
from vjepa2_ros.model.latents import normalize_latents
from vjepa2_ros.model.preprocess import PreprocessConfig, preprocess_frames
from vjepa2_ros.training.config import TrainConfig

EpisodeLoader = tuple[str, Callable[[], Episode]]     # (file named in reports, read it -> resampled Episode)
# What a broken recording raises from the readers (h5py and PyAV errors are OSError / ValueError).
READ_ERRORS = (DataError, OSError, ValueError, KeyError, EOFError)
CACHE_VERSION = 1


@dataclass
class DataReport:
    """What a scan found: episodes used, and each skipped file with the reason."""

    used: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)     # (file, reason)
    clips: int = 0

    def summary(self) -> str:
        lines = [f"data: {len(self.used)} episodes used, {len(self.skipped)} skipped, {self.clips} clips"]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"used": self.used, "skipped": [{"file": n, "reason": r} for n, r in self.skipped], "clips": self.clips}

    def require_clips(self, clip_frames: int) -> None:
        if self.clips == 0:
            first = "; ".join(f"{n}: {r}" for n, r in self.skipped[:3])
            raise DataError(f"no usable training clips of {clip_frames} frames: {len(self.skipped)} of "
                            f"{len(self.skipped) + len(self.used)} episodes skipped ({first})")


# -- episode sources -------------------------------------------------------------------------------
def episode_loaders(cfg: TrainConfig) -> list[EpisodeLoader]:
    """The episodes a config names: every DROID episode under its roots/list files and every bag."""
    from vjepa2_ros.data.droid import find_droid_episodes, read_droid_episode
    loaders: list[EpisodeLoader] = []
    for root in cfg.droid:
        for folder in find_droid_episodes(root):
            loaders.append((str(folder), lambda f=folder: read_droid_episode(f, camera=cfg.droid_camera,
                                                                             step_s=cfg.step_s)))
    for entry in cfg.bags:
        for bag in find_bags(entry):
            loaders.append((str(bag), lambda b=bag: _read_bag(b, cfg)))
    if not loaders:
        raise ConfigError("train config names no data: set `droid` (roots or list files) and/or `bags`")
    return loaders


def find_bags(path: str | Path) -> list[Path]:
    """A bag directory (it has metadata.yaml), or every bag directory below `path`, sorted."""
    path = Path(path)
    if (path / "metadata.yaml").is_file():
        return [path]
    found = sorted(p.parent for p in path.rglob("metadata.yaml")) if path.is_dir() else []
    if not found:
        raise DataError(f"{path}: neither a rosbag2 bag (no metadata.yaml) nor a directory of bags")
    return found


def _read_bag(path: str, cfg: TrainConfig) -> Episode:
    from vjepa2_ros.data.bags import read_bag_episode
    topics = {k: v for k, v in (("camera_topic", cfg.bag_camera_topic),
                                ("joint_states_topic", cfg.bag_joint_states_topic)) if v is not None}
    return read_bag_episode(path, arm=cfg.bag_arm, step_s=cfg.step_s, **topics)


def memory_loaders(episodes: Sequence[Episode]) -> list[EpisodeLoader]:
    """Loaders over episodes already in memory (benchmarks, tests)."""
    return [(ep.source, lambda ep=ep: ep) for ep in episodes]


def _try_read(name: str, load: Callable[[], Episode], clip_frames: int, report: DataReport) -> Episode | None:
    try:
        ep = load()
    except READ_ERRORS as e:
        report.skipped.append((name, f"{type(e).__name__}: {e}"))
        return None
    if len(ep) < clip_frames:
        report.skipped.append((name, f"too short: {len(ep)} model steps, a clip needs {clip_frames}"))
        return None
    report.used.append(name)
    return ep


def clip_windows(lengths: Sequence[int], clip_frames: int) -> np.ndarray:
    """[(episode, first step)] of every window of clip_frames consecutive steps: int64 [C, 2]."""
    rows = [(e, s) for e, n in enumerate(lengths) for s in range(n - clip_frames + 1)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


# -- online: frames -> encoder in the training step ------------------------------------------------
class EpisodeClips(Dataset):
    """Clips of preprocessed frames. Item: frames [3, F, c, c] f32, actions [F-1, 7], states [F, 7] f32.

    Every episode is read once to index it (and to find broken files); items re-read their
    episode, keeping the last one in memory.
    """

    def __init__(self, loaders: Sequence[EpisodeLoader], clip_frames: int, preprocess: PreprocessConfig) -> None:
        self.clip_frames, self.preprocess = clip_frames, preprocess
        self.report = DataReport()
        self.loaders: list[EpisodeLoader] = []
        lengths = []
        for name, load in loaders:
            ep = _try_read(name, load, clip_frames, self.report)
            if ep is not None:
                self.loaders.append((name, load))
                lengths.append(len(ep))
        self.windows = clip_windows(lengths, clip_frames)
        self.report.clips = len(self.windows)
        self._last: tuple[int, Episode, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def _episode(self, e: int) -> tuple[Episode, np.ndarray]:
        if self._last is None or self._last[0] != e:
            ep = self.loaders[e][1]()
            self._last = (e, ep, ep.actions())
        return self._last[1], self._last[2]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, s = self.windows[i]
        ep, actions = self._episode(int(e))
        F = self.clip_frames
        return {"frames": preprocess_frames(ep.frames[s:s + F], self.preprocess),               # 3, F, c, c
                "actions": torch.from_numpy(actions[s:s + F - 1]).float(),                      # F-1, 7
                "states": torch.from_numpy(ep.states[s:s + F]).float()}                         # F, 7


# -- cached latents --------------------------------------------------------------------------------
def cache_key(cfg: TrainConfig, encoder_cfg: dict[str, Any], loaders: Sequence[EpisodeLoader]) -> dict[str, Any]:
    """Everything the cached latents depend on; a cache with another key is rebuilt."""
    ckpt = cfg.encoder_checkpoint
    ckpt_id = None if ckpt is None else {"path": str(Path(ckpt).resolve()), "bytes": os.path.getsize(ckpt),
                                         "mtime_ns": os.stat(ckpt).st_mtime_ns}
    return {"version": CACHE_VERSION, "encoder": encoder_cfg, "encoder_checkpoint": ckpt_id,
            "seed": cfg.seed if ckpt is None else None, "crop": cfg.crop, "crop_size": cfg.crop_size,
            "roi": None if cfg.roi is None else list(cfg.roi), "step_s": cfg.step_s, "dtype": cfg.cache_dtype,
            "sources": [name for name, _ in loaders]}


@torch.no_grad()
def build_latent_cache(loaders: Sequence[EpisodeLoader], encoder: torch.nn.Module, preprocess: PreprocessConfig,
                       cache_dir: Path, key: dict[str, Any], clip_frames: int, device: torch.device,
                       autocast: Callable[[], Any], rank: int = 0, world: int = 1, chunk_frames: int = 32,
                       progress: bool = True) -> DataReport:
    """Encode every frame of every episode once: <cache_dir>/<k>.latents.npy [T, n, D] (normalised
    latents), <k>.states.npy [T, 7] f64, <k>.actions.npy [T-1, 7] f64, and index.json.

    Reuses the cache when index.json has the same key. Under DDP every process calls this and
    encodes episodes rank, rank + world, ...; rank 0 writes the index (callers wait at a barrier
    before reading it). Returns the data report.
    """
    from tqdm import tqdm
    index_path = cache_dir / "index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index.get("key") == key:
            return _report_from_index(index)
    cache_dir.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(key["dtype"])
    episodes: list[tuple[int, dict[str, Any]]] = []
    skipped: list[tuple[int, str, str]] = []
    mine = range(rank, len(loaders), world)
    for k in tqdm(mine, desc="encoding episodes", unit="ep", disable=not (progress and rank == 0)):
        name, load = loaders[k]
        seen = DataReport()
        ep = _try_read(name, load, clip_frames, seen)
        if ep is None:
            skipped.append((k, *seen.skipped[0]))
            continue
        chunks = []
        for a in range(0, len(ep), chunk_frames):
            x = preprocess_frames(ep.frames[a:a + chunk_frames], preprocess, device=device)     # 3, t, c, c
            with autocast():
                z = normalize_latents(encoder(x.transpose(0, 1)).float())                     # t, n, D
            chunks.append(z.float().cpu().numpy().astype(dtype))
        stem = f"{k:06d}"
        _save_npy(cache_dir / f"{stem}.latents.npy", np.concatenate(chunks))
        _save_npy(cache_dir / f"{stem}.states.npy", ep.states)
        _save_npy(cache_dir / f"{stem}.actions.npy", ep.actions())
        episodes.append((k, {"source": name, "stem": stem, "steps": len(ep)}))
    if world > 1:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, (episodes, skipped))          # every rank's share, in episode order
        episodes = sorted((e for p in parts for e in p[0]), key=lambda e: e[0])
        skipped = sorted(s for p in parts for s in p[1])
    index = {"key": key, "episodes": [e for _, e in episodes],
             "skipped": [{"file": n, "reason": r} for _, n, r in skipped]}
    if rank == 0:
        tmp = index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, index_path)
    report = _report_from_index(index)
    report.clips = len(clip_windows([e["steps"] for _, e in episodes], clip_frames))
    return report


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _report_from_index(index: dict[str, Any]) -> DataReport:
    return DataReport(used=[e["source"] for e in index["episodes"]],
                      skipped=[(s["file"], s["reason"]) for s in index["skipped"]])


class LatentClips(Dataset):
    """Clips of cached latents. Item: latents [F*n, D] f32, actions [F-1, 7], states [F, 7] f32.

    States and actions (small) are held in memory; each item memory-maps its episode's latents
    and copies its window, so a DROID-sized cache needs neither RAM nor one mapping per episode.
    """

    def __init__(self, cache_dir: Path, clip_frames: int) -> None:
        self.cache_dir = Path(cache_dir)
        index_path = self.cache_dir / "index.json"
        if not index_path.is_file():
            raise DataError(f"{cache_dir}: no latent cache (index.json missing); build it with build_latent_cache")
        index = json.loads(index_path.read_text())
        self.clip_frames = clip_frames
        self.report = _report_from_index(index)
        self.stems = [e["stem"] for e in index["episodes"]]
        self.actions = [np.load(self.cache_dir / f"{stem}.actions.npy").astype(np.float32) for stem in self.stems]
        self.states = [np.load(self.cache_dir / f"{stem}.states.npy").astype(np.float32) for stem in self.stems]
        self.windows = clip_windows([len(s) for s in self.states], clip_frames)
        self.report.clips = len(self.windows)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, s = (int(v) for v in self.windows[i])
        F = self.clip_frames
        latents = np.load(self.cache_dir / f"{self.stems[e]}.latents.npy", mmap_mode="r")       # T, n, D
        z = torch.from_numpy(np.array(latents[s:s + F], dtype=np.float32))                      # F, n, D (a copy)
        return {"latents": z.flatten(0, 1),                                                     # F*n, D
                "actions": torch.from_numpy(self.actions[e][s:s + F - 1].copy()),
                "states": torch.from_numpy(self.states[e][s:s + F].copy())}


# -- batches ---------------------------------------------------------------------------------------
class GlobalBatchSampler(Sampler[list[int]]):
    """This process's share of each global batch, for optimiser steps start_step .. steps-1.

    Epoch e is a permutation of all clips seeded by (seed, e); global batch k of the epoch is
    perm[k*G:(k+1)*G] with G = batch_size * world_size, and rank r takes the r-th slice of
    batch_size. So a run on 2 processes with batch b sees exactly the clips of a 1-process run
    with batch 2b, and a resumed run continues with the batches it would have seen.
    """

    def __init__(self, num_clips: int, batch_size: int, world_size: int, rank: int, seed: int,
                 start_step: int, steps: int) -> None:
        self.global_batch = batch_size * world_size
        if num_clips < self.global_batch:
            raise DataError(f"{num_clips} training clips are fewer than one global batch of {self.global_batch} "
                            f"(batch_size {batch_size} x {world_size} processes); add data or lower batch_size")
        self.num_clips, self.batch_size, self.rank, self.seed = num_clips, batch_size, rank, seed
        self.start_step, self.steps = start_step, steps
        self.batches_per_epoch = num_clips // self.global_batch          # the remainder is dropped

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, perm = -1, torch.empty(0, dtype=torch.long)
        for step in range(self.start_step, self.steps):
            e, k = divmod(step, self.batches_per_epoch)
            if e != epoch:
                epoch, perm = e, torch.randperm(self.num_clips, generator=torch.Generator().manual_seed(self.seed + e))
            first = k * self.global_batch + self.rank * self.batch_size
            yield perm[first:first + self.batch_size].tolist()
