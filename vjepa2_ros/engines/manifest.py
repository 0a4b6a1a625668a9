"""The manifest: a JSON file beside every exported ONNX graph and every built TensorRT engine.

It says what the artifact is (network, model config, weights, precision, I/O names, dtypes and
shapes, the TensorRT profile), what made it (tool versions, the GPU for TensorRT) and which
command rebuilds it. Loading an artifact checks its manifest against what the caller expects
and against the file itself (size and sha256), and refuses any mismatch with a message that
names the field and the rebuild command.

File names inside an engine directory (one precision per file name, several may coexist):
  encoder-<precision>.onnx            predictor-T<steps>-<precision>.onnx       (export)
  predictor-step-T<t>-<precision>.onnx                                          (export --step-graphs)
  encoder-<precision>.engine          predictor-T<steps>-<precision>.engine     (build-engines)
and each artifact's manifest is `<artifact>.manifest.json`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from vjepa2_ros.errors import EngineError
from vjepa2_ros.model.checkpoint import sha256_file
from vjepa2_ros.model.predictor import COND_TOKENS

MANIFEST_VERSION = 1
FORMATS = ("onnx", "tensorrt")
NETWORKS = ("encoder", "predictor", "predictor_step")   # predictor_step: one KV-cached step (ONNX Runtime)
PRECISIONS = ("float32", "float16", "bfloat16")
# Model-config fields that do not change the computed function (the attention kernel is
# "math" in exported graphs, whatever the torch model used).
IGNORED_CONFIG_FIELDS = ("attn",)

Dim = Union[int, str]          # a fixed size, or the name of a dynamic axis ("batch", "samples")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an artifact."""

    name: str
    dtype: str                                  # one of PRECISIONS
    shape: tuple[Dim, ...]                      # str entries are dynamic axes
    profile: tuple[int, int, int] | None = None  # TensorRT min/opt/max of the dynamic axis

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "profile": None if self.profile is None else list(self.profile)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        return cls(str(d["name"]), str(d["dtype"]), tuple(d["shape"]),
                   None if d.get("profile") is None else tuple(int(v) for v in d["profile"]))


@dataclass(frozen=True)
class Manifest:
    """What one artifact file holds and how it was made."""

    format: str                                 # "onnx" | "tensorrt"
    network: str                                # "encoder" | "predictor"
    model: dict[str, Any]                       # the network's config, `cfg.to_dict()`
    weights: str                                # "sha256:<hex of the source checkpoint>" or "random:seed=<n>"
    precision: str                              # one of PRECISIONS
    steps: int | None                           # predictor time steps T (fixed per file); None for the encoder
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    file: str                                   # artifact file name, relative to the manifest
    files: dict[str, dict[str, Any]]            # name -> {bytes, sha256} of every file it needs (itself, ONNX
                                                # external data)
    tools: dict[str, str]                       # versions: torch, onnx, onnxruntime, tensorrt, vjepa2_ros
    rebuild: str                                # the command that makes this artifact again
    gpu: dict[str, str] | None = None           # TensorRT: {"name", "compute_capability"}
    source: dict[str, str] | None = None        # TensorRT: the ONNX it was built from {"file", "sha256"}
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        for name, value, allowed in (("format", self.format, FORMATS), ("network", self.network, NETWORKS),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in allowed:
                raise EngineError(f"manifest {name} must be one of {allowed}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        d = dict(d)
        d["inputs"] = tuple(TensorSpec.from_dict(t) for t in d["inputs"])
        d["outputs"] = tuple(TensorSpec.from_dict(t) for t in d["outputs"])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise EngineError(f"manifest has unknown fields {unknown}; written by a newer vjepa2_ros?")
        return cls(**d)


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".manifest.json")


def artifact_name(network: str, precision: str, steps: int | None, fmt: str) -> str:
    """encoder-float16.onnx, predictor-T2-float32.engine, predictor-step-T2-float32.onnx, ..."""
    ext = {"onnx": "onnx", "tensorrt": "engine"}[fmt]
    stem = {"encoder": "encoder", "predictor": f"predictor-T{steps}", "predictor_step": f"predictor-step-T{steps}"}
    return f"{stem[network]}-{precision}.{ext}"


def weights_id(checkpoint: str | Path | None, seed: int = 0) -> str:
    """The `weights` entry for a checkpoint file (its sha256) or for the seeded random init."""
    return f"random:seed={seed}" if checkpoint is None else f"sha256:{sha256_file(checkpoint)}"


def tool_versions(*tools: str) -> dict[str, str]:
    """Installed versions of `tools` (distribution names), read from package metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for tool in ("vjepa2_ros", "torch") + tools:
        try:
            out[tool] = version(tool)
        except PackageNotFoundError:
            out[tool] = "not installed"
    return out


def write_manifest(manifest: Manifest, directory: str | Path) -> Path:
    path = manifest_path(Path(directory) / manifest.file)
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(artifact: str | Path) -> Manifest:
    """Read the manifest beside `artifact` and check the artifact file against it (size, sha256)."""
    artifact = Path(artifact)
    path = manifest_path(artifact)
    if not artifact.is_file():
        raise EngineError(f"{artifact} does not exist; make it with `vjepa2-ros export` (ONNX) or "
                          f"`vjepa2-ros build-engines` (TensorRT)")
    if not path.is_file():
        raise EngineError(f"{artifact} has no manifest {path.name} beside it; refusing an artifact of unknown "
                          f"origin. Re-create it with `vjepa2-ros export` / `vjepa2-ros build-engines`")
    try:
        manifest = Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise EngineError(f"manifest {path} is corrupt or incomplete ({type(e).__name__}: {e}); "
                          f"re-create the artifact with `vjepa2-ros export` / `vjepa2-ros build-engines`") from None
    if manifest.version != MANIFEST_VERSION:
        raise EngineError(f"manifest {path} has version {manifest.version}, this vjepa2_ros reads version "
                          f"{MANIFEST_VERSION}; rebuild with: {manifest.rebuild}")
    if manifest.file != artifact.name:
        raise EngineError(f"manifest {path} describes {manifest.file!r}, not {artifact.name!r}; "
                          f"rebuild with: {manifest.rebuild}")
    for name, entry in manifest.files.items():
        path = artifact.parent / name
        if not path.is_file():
            raise EngineError(f"{path} is missing (needed by {artifact.name}); rebuild with: {manifest.rebuild}")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise EngineError(f"{path} is {size} bytes, its manifest says {entry['bytes']} "
                              f"(truncated or replaced?); rebuild with: {manifest.rebuild}")
        digest = sha256_file(path)        # ~1 s per GB: cheap next to loading the engine
        if digest != entry["sha256"]:
            raise EngineError(f"{path} has sha256 {digest[:16]}…, its manifest says {entry['sha256'][:16]}… "
                              f"(corrupt or replaced?); rebuild with: {manifest.rebuild}")
    return manifest


def file_entries(directory: str | Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The `files` entry of a manifest for files in `directory`."""
    return {n: {"bytes": (Path(directory) / n).stat().st_size, "sha256": sha256_file(Path(directory) / n)}
            for n in names}


@dataclass(frozen=True)
class Expected:
    """What the caller wants an artifact to be; None fields are not checked."""

    network: str
    model: dict[str, Any] | None = None         # cfg.to_dict()
    weights: str | None = None                  # weights_id(checkpoint)
    precision: str | None = None
    steps: int | None = None
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None
    tools: dict[str, str] = field(default_factory=dict)   # versions that must match exactly (TensorRT)
    gpu: dict[str, str] | None = None


def _config_diff(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    keys = sorted((set(found) | set(wanted)) - set(IGNORED_CONFIG_FIELDS))
    norm = lambda v: list(v) if isinstance(v, tuple) else v   # noqa: E731 (JSON turns tuples into lists)
    return [f"{k}: file {found.get(k)!r} vs wanted {wanted.get(k)!r}" for k in keys
            if norm(found.get(k)) != norm(wanted.get(k))]


def check_manifest(manifest: Manifest, expected: Expected, artifact: str | Path) -> None:
    """Raise an EngineError naming every field where `manifest` differs from `expected`."""
    problems: list[str] = []
    if manifest.network != expected.network:
        problems.append(f"network: file {manifest.network!r} vs wanted {expected.network!r}")
    if expected.model is not None:
        problems += [f"model config {p}" for p in _config_diff(manifest.model, expected.model)]
    if expected.weights is not None and manifest.weights != expected.weights:
        problems.append(f"weights: file {manifest.weights} vs wanted {expected.weights} (another checkpoint)")
    for name in ("precision", "steps"):
        want = getattr(expected, name)
        if want is not None and getattr(manifest, name) != want:
            problems.append(f"{name}: file {getattr(manifest, name)!r} vs wanted {want!r}")
    for name in ("inputs", "outputs"):
        want = getattr(expected, name)
        if want is not None:
            have = {t.name: t for t in getattr(manifest, name)}
            for t in want:
                h = have.get(t.name)
                if h is None:
                    problems.append(f"{name}: file has no tensor {t.name!r} (has {sorted(have)})")
                elif (h.dtype, tuple(h.shape)) != (t.dtype, tuple(t.shape)):
                    problems.append(f"{name} {t.name}: file {h.dtype}{list(h.shape)} vs wanted "
                                    f"{t.dtype}{list(t.shape)}")
    for tool, version in expected.tools.items():
        if manifest.tools.get(tool) != version:
            problems.append(f"{tool} version: file built with {manifest.tools.get(tool)!r}, installed {version!r}")
    if expected.gpu is not None and manifest.gpu != expected.gpu:
        problems.append(f"GPU: file built for {manifest.gpu}, this GPU is {expected.gpu}")
    if problems:
        raise EngineError(f"{artifact} does not match what was asked for:\n  " + "\n  ".join(problems)
                          + f"\nrebuild it with: {manifest.rebuild}")


def io_specs(network: str, model_cfg: Any, precision: str, steps: int | None = None
             ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs of an exported network (profiles not set).

    encoder:   images [batch, 3, H, W]                                -> tokens [batch, N, D]
    predictor: z [samples, T*n, D], actions/states [samples, T, 7]    -> predictions [samples, T*n, D]
    predictor_step t (keys/values of steps 1..t-1 in, L = 2+n tokens per step):
        z [samples, n, D], action/state [samples, 7],
        past_k/past_v [depth, past_samples, heads, (t-1)*L, hd] (t > 1; past_samples 1 or samples)
        -> predictions [samples, n, D], present_k/present_v [depth, samples, heads, t*L, hd]
    """
    if network == "encoder":
        gh, gw = model_cfg.grid()
        h, w = gh * model_cfg.patch_size, gw * model_cfg.patch_size
        return ((TensorSpec("images", precision, ("batch", model_cfg.in_chans, h, w)),),
                (TensorSpec("tokens", precision, ("batch", gh * gw, model_cfg.embed_dim)),))
    if network not in NETWORKS:
        raise EngineError(f"network must be one of {NETWORKS}, got {network!r}")
    if steps is None or not 1 <= steps <= model_cfg.max_steps:
        raise EngineError(f"predictor steps must be in [1, {model_cfg.max_steps}], got {steps!r}")
    n, D, a = model_cfg.tokens_per_frame, model_cfg.embed_dim, model_cfg.action_embed_dim
    if network == "predictor_step":
        def kv(name: str, rows: str, t: int) -> TensorSpec:
            return TensorSpec(name, precision, (model_cfg.depth, rows, model_cfg.num_heads, t * (COND_TOKENS + n),
                                                model_cfg.head_dim))

        past = (kv("past_k", "past_samples", steps - 1), kv("past_v", "past_samples", steps - 1)) if steps > 1 else ()
        return ((TensorSpec("z", precision, ("samples", n, D)), TensorSpec("action", precision, ("samples", a)),
                 TensorSpec("state", precision, ("samples", a))) + past,
                (TensorSpec("predictions", precision, ("samples", n, D)), kv("present_k", "samples", steps),
                 kv("present_v", "samples", steps)))
    tokens = steps * n
    return ((TensorSpec("z", precision, ("samples", tokens, model_cfg.embed_dim)),
             TensorSpec("actions", precision, ("samples", steps, a)),
             TensorSpec("states", precision, ("samples", steps, a))),
            (TensorSpec("predictions", precision, ("samples", tokens, model_cfg.embed_dim)),))
