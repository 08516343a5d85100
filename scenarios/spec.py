"""Scenario specs: what to generate, as YAML under scenarios/conf/spec/ (docs/design.md "Scenarios").

    openvica scenarios generate --spec night-rain --out DIR fork.branches=4 clips.limit=20   # a packaged spec
    openvica scenarios generate --spec my-spec.yaml --out DIR                                 # a file of yours

A spec is read with Hydra (a packaged name or a path, then `key=value` overrides in Hydra's grammar), validated into
the frozen dataclasses below (every error reported at once, each naming its field), and content-hashed: the hash
covers what decides the samples' content (clip query, fork, horizon, sampling, ego program), not the name, the
selection, the gates, the exports or the batch size, so re-selecting or re-batching a dataset keeps its samples.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent / "conf" / "spec"
EGO_PROGRAMS = ("constant", "brake", "swerve_left", "swerve_right", "lane_change", "stop_and_go")
SELECT_BY = ("all", "surprise", "diverse")
LABEL_FORMATS = ("bdd", "coco")
RANGES = ("speed_mps", "abs_yaw_rate", "decel_mps2")
FORK_MODES = ("labelled", "auto")  # fork.at besides a frame number
RENAMED = {"seeds": "clips"}  # old top-level field -> its name now (still read, with a DeprecationWarning)


@dataclass(frozen=True)
class ClipQuery:
    """Which clips to start from: attributes in lists, ego-motion ranges [min, max] (None: open) over the clip's window."""

    where: dict = field(default_factory=dict)  # {"weather": ["rainy"], "timeofday": ["night"], ...}
    speed_mps: tuple = (None, None)  # mean ego speed over the window
    abs_yaw_rate: tuple = (None, None)  # mean |yaw rate| over the window, rad/s
    decel_mps2: tuple = (None, None)  # strongest deceleration over the window, m/s^2 (positive: braking)
    limit: int | None = None  # at most this many clips, first by clip id; not part of the hash (rerun to grow)
    source: str | None = None  # a token store or a folder of clips; `--clips` overrides; not part of the hash


@dataclass(frozen=True)
class Fork:
    seed_frames: int = 2  # T, the paper's 2
    # first frame of the seed clip used as seed; "labelled": the first window whose seed frames all carry ground
    # truth (clips without are skipped); "auto": that where the clip has one, else frame 0
    at: int | str = "auto"
    branches: int = 1  # futures per seed clip, sharing its prefill


@dataclass(frozen=True)
class Sampling:
    top_k: int | None = None  # None: the bundle's (the paper's 1000 for K = 8192)
    temperature: float = 1.0


@dataclass(frozen=True)
class Ego:
    program: str = "constant"
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Select:
    by: str = "all"  # all | surprise (the top `fraction` by mean surprise) | diverse (`k` by k-center greedy)
    fraction: float = 1.0
    k: int | None = None
    exclude_flagged: bool = True  # clips failing the flicker or frozen gate are never selected
    teacher: str | None = None  # a DINOv2 folder: diversity on its features instead of codebook usage


@dataclass(frozen=True)
class Gates:
    """Quality gates, stored as fields of each clip, never deletions."""

    flicker_ratio: float = 4.0  # frame-to-frame change of the generated frames over the seed frames'
    frozen_change: float = 0.5  # mean absolute change (uint8 levels) under which consecutive frames are frozen
    surprise_z: float = 3.5  # robust z-score (median, MAD) of a clip's mean surprise over the dataset


@dataclass(frozen=True)
class Export:
    frames: str = "jpg"
    video: bool = True
    labels: tuple = ("bdd", "coco")


@dataclass(frozen=True)
class Scaling:
    num_workers: int = 0  # 0: this process; N: N Ray actors (openvica_sim.distributed)
    use_gpu: bool = False


@dataclass(frozen=True)
class Spec:
    name: str = "unnamed"
    description: str = ""
    clips: ClipQuery = field(default_factory=ClipQuery)
    fork: Fork = field(default_factory=Fork)
    horizon: int = 14  # N generated frames, the paper's 14
    sampling: Sampling = field(default_factory=Sampling)
    ego: Ego = field(default_factory=Ego)
    select: Select = field(default_factory=Select)
    gates: Gates = field(default_factory=Gates)
    export: Export = field(default_factory=Export)
    batch_size: int = 8  # samples per engine call: speed only, never content
    scaling: Scaling = field(default_factory=Scaling)

    @property
    def content(self) -> dict:
        """What decides every sample's tokens: the hashed part of the spec."""
        # not the source (`--clips` may name the same clips at another path) nor the limit: raising it grows a
        # dataset, every sample keeping its seed and tokens. The query's key stays "seeds", its name before the
        # clips/seeds rename, so that datasets generated before it keep their hash and resume.
        query = {k: v for k, v in asdict(self.clips).items() if k not in ("source", "limit")}
        return {"seeds": query, "fork": asdict(self.fork), "horizon": self.horizon,
                "sampling": asdict(self.sampling), "ego": asdict(self.ego)}

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.content, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def sample_seed(spec_hash: str, clip_id: str, fork: int, branch: int) -> int:
    """A sample's sampler seed (docs/design.md): sha256 of "hash:clip:fork:branch", first 8 bytes little-endian, as the
    engine's signed int64."""
    digest = hashlib.sha256(f"{spec_hash}:{clip_id}:{fork}:{branch}".encode()).digest()
    value = int.from_bytes(digest[:8], "little")
    return value - (1 << 64) if value >= 1 << 63 else value


# ---- loading ------------------------------------------------------------------------------------------------------

def packaged_specs() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def load_spec(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """A packaged spec by name, or a YAML file, with Hydra `key=value` overrides; validated.

    Raises:
        FileNotFoundError: no such packaged spec or file (the packaged names are listed).
        ValueError: every invalid or unknown field, named, in one message.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        if not path.is_file():
            raise FileNotFoundError(f"no scenario spec file {path}")
        config_dir, config_name = path.resolve().parent, path.stem
    else:
        if not (SPEC_DIR / f"{name_or_path}.yaml").is_file():
            close = difflib.get_close_matches(name_or_path, packaged_specs(), n=1)
            raise FileNotFoundError(f"no packaged scenario spec {name_or_path!r}"
                                    f"{f'; did you mean {close[0]!r}' if close else ''}? packaged: "
                                    f"{packaged_specs()}, or pass a .yaml path")
        config_dir, config_name = SPEC_DIR, name_or_path
    overrides = [_renamed_override(o) for o in overrides]
    # The primary config puts the spec file over every default field, so any field can be overridden as key=value
    # (Hydra refuses overrides of keys a file does not have) and a spec file needs no defaults list of its own.
    store = ConfigStore.instance()
    store.store(name="_openvica_spec_defaults", node={**Spec(name=config_name).to_dict()})
    store.store(name="_openvica_spec", node={"defaults": ["_openvica_spec_defaults", config_name, "_self_"]})
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("_openvica_spec", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:  # a bad override or YAML: Hydra's message names it
        raise ValueError(f"scenario spec {name_or_path}: {e}") from e
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return spec_from_dict(data, origin=str(name_or_path))


def spec_from_dict(data: dict, origin: str = "spec") -> Spec:
    """Validate plain data into a `Spec`, collecting every error.

    Raises:
        ValueError: unknown fields (with the closest known one) and invalid values, each named by its dotted path.
    """
    errors: list[str] = []
    data = dict(data)
    for old, new in RENAMED.items():  # a spec written before the rename: its section over the defaults
        if old in data:
            warnings.warn(f"scenario spec {origin}: `{old}:` is now `{new}:` (the clip query); rename it",
                          DeprecationWarning, stacklevel=2)
            data[new] = {**(data.get(new) or {}), **(data.pop(old) or {})}
    spec = _build(Spec, data, "", errors)
    if spec is not None:
        errors += _check(spec)
    if errors:
        raise ValueError(f"invalid scenario spec {origin}:\n  " + "\n  ".join(errors))
    return spec


def _renamed_override(override: str) -> str:
    """`seeds.limit=3` -> `clips.limit=3` (with a DeprecationWarning): overrides written before the rename."""
    head, dot, rest = override.partition(".")
    prefix = head[:len(head) - len(head.lstrip("+~"))]
    if dot and head.lstrip("+~") in RENAMED:
        new = f"{prefix}{RENAMED[head.lstrip('+~')]}.{rest}"
        warnings.warn(f"spec override {override!r} is now {new!r} (the clip query)", DeprecationWarning, stacklevel=3)
        return new
    return override


def _build(cls, data, prefix: str, errors: list[str]):
    if not isinstance(data, dict):
        errors.append(f"{prefix.rstrip('.') or 'spec'}: expected a mapping, got {data!r}")
        return None
    known = {f.name: f for f in fields(cls)}
    for key in sorted(set(data) - set(known)):
        close = difflib.get_close_matches(key, known, n=1)
        errors.append(f"{prefix}{key}: unknown field{f'; did you mean {prefix}{close[0]}' if close else ''} "
                      f"(fields: {sorted(known)})")
    values = {}
    for name, f in known.items():
        if name not in data:
            continue
        sub = _NESTED.get((cls, name))
        values[name] = _build(sub, data[name], f"{prefix}{name}.", errors) if sub else data[name]
    if any(v is None for k, v in values.items() if _NESTED.get((cls, k))):
        return None
    try:
        return cls(**values)
    except TypeError as e:
        errors.append(f"{prefix.rstrip('.') or 'spec'}: {e}")
        return None


_NESTED = {(Spec, "clips"): ClipQuery, (Spec, "fork"): Fork, (Spec, "sampling"): Sampling, (Spec, "ego"): Ego,
           (Spec, "select"): Select, (Spec, "gates"): Gates, (Spec, "export"): Export, (Spec, "scaling"): Scaling}


def _check(spec: Spec) -> list[str]:
    e = []

    def integer(value, name, minimum):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            e.append(f"{name}={value!r} must be an integer >= {minimum}")

    def number(value, name, low=-math.inf, high=math.inf, open_low=False):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
                low < value <= high if open_low else low <= value <= high):
            e.append(f"{name}={value!r} must be a number in {'(' if open_low else '['}{low}, {high}]")

    q = spec.clips
    if not isinstance(q.where, dict):
        e.append(f"clips.where={q.where!r} must map attribute names to lists of values")
    else:
        for key, values in q.where.items():
            if not isinstance(values, (list, tuple)) or not values:
                e.append(f"clips.where.{key}={values!r} selects nothing: give a non-empty list of values, or drop "
                         f"the key to accept any {key}")
    for name in RANGES:
        bounds = getattr(q, name)
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2 or any(
                b is not None and (not isinstance(b, (int, float)) or isinstance(b, bool)) for b in bounds):
            e.append(f"clips.{name}={bounds!r} must be [min, max], numbers or null (open)")
        elif None not in bounds and bounds[0] > bounds[1]:
            e.append(f"clips.{name}={list(bounds)}: min > max selects nothing")
    if q.limit is not None:
        integer(q.limit, "clips.limit", 1)
    integer(spec.fork.seed_frames, "fork.seed_frames", 2)
    if spec.fork.at not in FORK_MODES:
        integer(spec.fork.at, "fork.at", 0)
    integer(spec.fork.branches, "fork.branches", 1)
    integer(spec.horizon, "horizon", 1)
    if isinstance(spec.fork.seed_frames, int) and spec.fork.seed_frames >= 16:
        e.append(f"fork.seed_frames={spec.fork.seed_frames} must be below the world model's 16-frame context")
    if spec.sampling.top_k is not None:
        integer(spec.sampling.top_k, "sampling.top_k", 1)
    number(spec.sampling.temperature, "sampling.temperature", 0.0)
    if spec.ego.program not in EGO_PROGRAMS:
        close = difflib.get_close_matches(str(spec.ego.program), EGO_PROGRAMS, n=1)
        e.append(f"ego.program={spec.ego.program!r} is not a program{f'; did you mean {close[0]!r}' if close else ''}"
                 f" ({', '.join(EGO_PROGRAMS)})")
    elif not isinstance(spec.ego.params, dict):
        e.append(f"ego.params={spec.ego.params!r} must be a mapping")
    else:
        from .ego import check_params

        e += check_params(spec.ego.program, spec.ego.params)
    s = spec.select
    if s.by not in SELECT_BY:
        e.append(f"select.by={s.by!r}: choose one of {list(SELECT_BY)}")
    number(s.fraction, "select.fraction", 0.0, 1.0, open_low=True)
    if s.by == "diverse":
        if s.k is None:
            e.append("select.by=diverse needs select.k, the number of clips to keep")
        else:
            integer(s.k, "select.k", 1)
    number(spec.gates.flicker_ratio, "gates.flicker_ratio", 0.0)
    number(spec.gates.frozen_change, "gates.frozen_change", 0.0)
    number(spec.gates.surprise_z, "gates.surprise_z", 0.0)
    if spec.export.frames != "jpg":
        e.append(f"export.frames={spec.export.frames!r}: only jpg is written")
    labels = spec.export.labels
    if not isinstance(labels, (list, tuple)) or set(labels) - set(LABEL_FORMATS):
        e.append(f"export.labels={labels!r}: a list of {list(LABEL_FORMATS)}")
    integer(spec.batch_size, "batch_size", 1)
    integer(spec.scaling.num_workers, "scaling.num_workers", 0)
    return e


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
