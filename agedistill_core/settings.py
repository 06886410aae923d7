"""Typed settings read from ``params.yaml``: one file for Dagster, DVC and the CLI.

``params.yaml`` has a ``base`` section and named ``profiles`` that override it
(deep merge).  A profile is chosen by ``--profile``, ``$AGEDISTILL_PROFILE`` or
the file's ``default_profile``.  Everything is validated once, here, so a typo
fails at start-up with the key and the fix, not an hour into a run.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from agedistill_core.errors import ConfigError

PARAMS_ENV = "AGEDISTILL_PARAMS"
PROFILE_ENV = "AGEDISTILL_PROFILE"


@dataclass(frozen=True)
class DatasetSettings:
    name: str = "demo"             # a key of agedistill_core.datasets.DATASETS
    root: str = "data/demo/raw"    # data root; relative paths are relative to params.yaml
    limit: int | None = None       # keep at most this many images (fixed-seed sample)
    # Several sources as one corpus: each a mapping {id, name, root, limit?, faces?, split?}
    # (``faces`` / ``split`` override the profile's for that source only).  Empty: the
    # single source above, whose id is ``name``.
    sources: tuple = ()


@dataclass(frozen=True)
class SplitSettings:
    test: float = 0.2              # share of images (or subjects) in the test split
    val: float = 0.2               # share of the rest that validates (SPEC: 2 of 10)


@dataclass(frozen=True)
class FaceSettings:
    detector: str = "none"         # a key of agedistill_core.faces.DETECTORS
    align: str = "none"            # none (square box + margin) | dlib5 (5-point landmark chip)
    align_padding: float = 0.2     # dlib5 chip padding (dlib's default; the age network's framing)
    margin: float = 0.2            # SPEC 2: square box + 0.2 on each side
    crop_size: int = 160           # stored crop side in pixels
    min_score: float = 0.5
    whole_image_fallback: bool = True  # a crop with no detection becomes its own box
    whole_image_max_side: int = 512   # ...if its longer side is at most this (larger: a photo -> no_face)
    min_face: int = 24             # a face box under this many pixels (shorter side) is `too_small`; 0 = off
    jpeg_quality: int = 95
    workers: int = 1


@dataclass(frozen=True)
class Source:
    """One folder of the corpus, resolved: its adapter, root, framing and split shares."""
    id: str                        # prefix of its image ids and value of the manifest's `dataset`
    name: str                      # the adapter (a key of agedistill_core.datasets.DATASETS)
    root: Path
    faces: FaceSettings
    split: SplitSettings
    limit: int | None = None


SOURCE_KEYS = {"id", "name", "root", "limit", "faces", "split"}


@dataclass(frozen=True)
class TeacherSettings:
    # Each member: a registered name (string) or a mapping {name: <registered>, ...options},
    # e.g. {name: caffe, prototxt: p, caffemodel: m, bins: 101} or {name: torch, checkpoint: c}.
    members: tuple = ("age_gender_onnx",)
    children: tuple = ()           # children specialists, same forms; gate below
    children_gate: float = 12.0    # SPEC 3: children members decide when the general age <= this
    variants: int = 8              # SPEC 3 test-time variants: 8, or 1 (original only)
    batch_size: int = 64           # faces per batch (x variants per member forward pass)
    threads: int = 0               # onnxruntime / torch intra-op threads; 0 = all cores
    prefetch: bool = True          # decode the next batch in a thread while the networks run


@dataclass(frozen=True)
class StudentSettings:
    archs: tuple[str, ...] = ("mn3_small",)
    loss: str = "paper"
    weighting: str = "none"        # none | agreement
    epochs: int = 70
    lr: float | None = None        # None: the architecture's SPEC learning rate
    lr_step_epochs: int = 20
    lr_gamma: float = 0.2
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int | None = None  # None: the architecture's SPEC batch size
    augment: bool = True
    max_train_faces: int | None = None
    workers: int = 0               # DataLoader worker processes
    pretrained_dir: str | None = None  # folder of local timm weights; None: from scratch
    label_source: str = "teacher"  # teacher (distillation) | ground_truth (baseline)
    init_checkpoint: str | None = None  # start from this student checkpoint (fine-tuning); None: fresh
    tag: str | None = None         # appended to the run folder name (keeps variants apart)
    threads: int = 0               # torch intra-op threads; 0 = torch default (all cores)
    cache_crops: bool = False      # no effect: crops are always decoded once, to the input size (kept for old params)
    sources: tuple[str, ...] = ()  # train/validate only on faces of these source ids; () = all
    balance: str = "none"          # none | band | band_sqrt: re-weight faces against age-band imbalance
    channels_last: bool = True     # NHWC memory format (faster convolutions on CPU)
    seed: int | None = None        # training seed (init, order, augmentation); None = the profile's seed
    patience: int | None = None    # stop once the rate has decayed twice and val loss has not improved
                                   #   for this many epochs (convergence); None = always all epochs (SPEC)


@dataclass(frozen=True)
class CorruptionSettings:
    """LFW+C-style robustness set: the base split's crops x corruptions x severities."""
    enabled: bool = True           # materialise lfwc_images in `materialize_all` / the CLI `all`
    base_split: str = "test"       # which split of the label table is corrupted
    names: tuple[str, ...] = ()    # () = all registered corruptions (SPEC's 13)
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    max_faces: int | None = None   # fixed-seed subset of the base split (None = all)
    seed: int = 0
    workers: int = 1


@dataclass(frozen=True)
class EvalSettings:
    batch_size: int = 128


@dataclass(frozen=True)
class Settings:
    profile: str
    params_path: Path
    workdir: Path
    seed: int = 0
    shard_size: int = 2000
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    faces: FaceSettings = field(default_factory=FaceSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    students: StudentSettings = field(default_factory=StudentSettings)
    evaluate: EvalSettings = field(default_factory=EvalSettings)
    corruptions: CorruptionSettings = field(default_factory=CorruptionSettings)

    # -- derived paths: one place that says where every artifact lives --------
    @property
    def data_root(self) -> Path:
        return self._path(self.dataset.root)

    def _path(self, value: str) -> Path:
        root = Path(value).expanduser()
        return root if root.is_absolute() else (self.params_path.parent / root)

    @property
    def sources(self) -> tuple[Source, ...]:
        """The corpus' sources: ``dataset.sources``, or the one ``dataset`` itself."""
        if not self.dataset.sources:
            return (Source(self.dataset.name, self.dataset.name, self.data_root, self.faces, self.split,
                           self.dataset.limit),)
        out = []
        for i, raw in enumerate(self.dataset.sources):
            where = f"{self.profile}.dataset.sources[{i}]"
            faces = _build_section(FaceSettings, _merge(asdict(self.faces), raw.get("faces") or {}), f"{where}.faces")
            split = _build_section(SplitSettings, _merge(asdict(self.split), raw.get("split") or {}), f"{where}.split")
            out.append(Source(str(raw["id"]), str(raw["name"]), self._path(str(raw["root"])), faces, split,
                              raw.get("limit")))
        return tuple(out)

    def source(self, source_id: str) -> Source:
        for src in self.sources:
            if src.id == source_id:
                return src
        raise ConfigError(f"profile {self.profile!r} has no source {source_id!r}; "
                          f"its sources: {', '.join(s.id for s in self.sources)}")

    @property
    def manifest_path(self) -> Path:
        return self.workdir / "manifest.parquet"

    @property
    def crops_dir(self) -> Path:
        return self.workdir / "crops"

    @property
    def labels_dir(self) -> Path:
        return self.workdir / "labels"

    @property
    def vmage_path(self) -> Path:
        return self.workdir / "vmage.parquet"

    @property
    def students_dir(self) -> Path:
        return self.workdir / "students"

    @property
    def lfwc_dir(self) -> Path:
        return self.workdir / "lfwc"

    @property
    def benchmarks_dir(self) -> Path:
        return self.workdir / "benchmarks"

    def section_hash(self, *names: str) -> str:
        """Short hash of some settings sections: a code/data version for caching."""
        payload = {n: _jsonable(getattr(self, n)) for n in names}
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


SECTIONS = {
    "dataset": DatasetSettings,
    "split": SplitSettings,
    "faces": FaceSettings,
    "teacher": TeacherSettings,
    "students": StudentSettings,
    "evaluate": EvalSettings,
    "corruptions": CorruptionSettings,
}
TOP_LEVEL = {"workdir", "seed", "shard_size"}


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build_section(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
        )
    values = {}
    for key, value in raw.items():
        default = getattr(cls(), key)
        if isinstance(default, tuple) and isinstance(value, (list, tuple)):
            value = tuple(value)
        elif isinstance(default, tuple) and isinstance(value, str):
            value = (value,)
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{where}.{key} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
                if not value.is_integer():
                    raise ConfigError(f"{where}.{key} must be a whole number, got {value!r}")
                value = int(value)
        values[key] = value
    return cls(**values)


def find_params(path: str | os.PathLike | None = None) -> Path:
    """The params file: the argument, else $AGEDISTILL_PARAMS, else ./params.yaml, else the repo's."""
    explicit = path or os.environ.get(PARAMS_ENV)
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"params file {explicit} not found; pass --params PATH or set {PARAMS_ENV}")
        return Path(explicit).resolve()
    for cand in ("params.yaml", Path(__file__).resolve().parents[1] / "params.yaml"):
        if Path(cand).is_file():
            return Path(cand).resolve()
    raise ConfigError(f"no params.yaml in {os.getcwd()}; run from the repo root or set {PARAMS_ENV}")


def load_raw(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict) or "profiles" not in raw:
        raise ConfigError(f"{path} must have a 'profiles' mapping (and optionally 'base')")
    return raw


def param_sources(profile: str | None = None, params: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Where each setting of a profile comes from in params.yaml: for every section and
    top-level key (``faces``, ``students``, ``seed`` ...), the dotted params.yaml keys
    whose values are merged into it, in merge order, listing only keys that exist.

    dvc.yaml's ``params`` are built from this (``agedistill_core.stages``), so DVC sees
    a change wherever in params.yaml it is made (``base.faces`` or ``profiles.P.faces``)."""
    path = find_params(params)
    raw = load_raw(path)
    name = profile or os.environ.get(PROFILE_ENV) or raw.get("default_profile")
    if name not in (raw.get("profiles") or {}):
        raise ConfigError(f"{path}: unknown profile {name!r}; choose one of: {', '.join(sorted(raw['profiles']))}")
    layers = [("base", raw.get("base") or {}), (f"profiles.{name}", raw["profiles"][name] or {})]
    out: dict[str, list[str]] = {}
    for key in [*SECTIONS, *sorted(TOP_LEVEL)]:
        out[key] = [f"{prefix}.{key}" for prefix, layer in layers if key in layer]
    return out


def load_settings(
    profile: str | None = None,
    params: str | os.PathLike | None = None,
    overrides: dict | None = None,
) -> Settings:
    """Read, merge and validate one profile of ``params.yaml``."""
    path = find_params(params)
    raw = load_raw(path)
    profiles = raw.get("profiles") or {}
    name = profile or os.environ.get(PROFILE_ENV) or raw.get("default_profile")
    if not name:
        raise ConfigError(f"{path}: no profile given and no default_profile; choose one of {sorted(profiles)}")
    if name not in profiles:
        raise ConfigError(f"{path}: unknown profile {name!r}; choose one of: {', '.join(sorted(profiles))}")
    merged = _merge(raw.get("base") or {}, profiles[name] or {})
    merged = _merge(merged, overrides or {})
    unknown = sorted(set(merged) - set(SECTIONS) - TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"{path} profile {name!r}: unknown key(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(set(SECTIONS) | TOP_LEVEL))}"
        )
    sections = {k: _build_section(cls, merged.get(k), f"{name}.{k}") for k, cls in SECTIONS.items()}
    workdir = Path(merged.get("workdir") or f"data/{name}")
    if not workdir.is_absolute():
        workdir = path.parent / workdir
    settings = Settings(
        profile=name,
        params_path=path,
        workdir=workdir,
        seed=int(merged.get("seed", 0)),
        shard_size=int(merged.get("shard_size", 2000)),
        **sections,
    )
    _validate(settings)
    return settings


def _validate_sources(s: Settings) -> None:
    seen = set()
    for i, raw in enumerate(s.dataset.sources):
        where = f"{s.profile}.dataset.sources[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping with id, name and root, got {raw!r}")
        unknown = sorted(set(raw) - SOURCE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(SOURCE_KEYS))}")
        for key in ("id", "name", "root"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ConfigError(f"{where} needs a non-empty '{key}' (e.g. id: lfw, name: lfw, root: ../shared/data/lfw)")
        if "/" in raw["id"] or raw["id"] in seen:
            raise ConfigError(f"{where}: id {raw['id']!r} must be unique and contain no '/'")
        seen.add(raw["id"])
        limit = raw.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ConfigError(f"{where}.limit must be a whole number >= 1 or null, got {limit!r}")
    srcs = s.sources  # builds (and so validates) every source's faces and split
    for src in srcs:
        if (src.faces.crop_size, src.faces.margin) != (s.faces.crop_size, s.faces.margin):
            raise ConfigError(f"{s.profile}: source {src.id!r} changes faces.crop_size or faces.margin; "
                              "students need one framing size and margin: set them in the profile's faces")
        for key in ("test", "val"):
            if not 0 <= getattr(src.split, key) < 1:
                raise ConfigError(f"{s.profile}: source {src.id!r} split.{key} must be in [0, 1)")
    ids = {src.id for src in srcs}
    for sid in s.students.sources:
        if sid not in ids:
            raise ConfigError(f"{s.profile}.students.sources names {sid!r}, which is not a source; "
                              f"choose from: {', '.join(sorted(ids))}")


def _validate(s: Settings) -> None:
    _validate_sources(s)
    if s.shard_size < 1:
        raise ConfigError(f"{s.profile}.shard_size must be >= 1, got {s.shard_size}")
    for key in ("test", "val"):
        value = getattr(s.split, key)
        if not 0 <= value < 1:
            raise ConfigError(f"{s.profile}.split.{key} must be in [0, 1), got {value}")
    if not 0 <= s.faces.margin <= 1:
        raise ConfigError(f"{s.profile}.faces.margin must be in [0, 1], got {s.faces.margin}")
    if s.faces.crop_size < 16:
        raise ConfigError(f"{s.profile}.faces.crop_size must be >= 16, got {s.faces.crop_size}")
    if s.students.epochs < 1:
        raise ConfigError(f"{s.profile}.students.epochs must be >= 1, got {s.students.epochs}")
    if s.students.label_source not in ("teacher", "ground_truth"):
        raise ConfigError(
            f"{s.profile}.students.label_source must be 'teacher' or 'ground_truth', "
            f"got {s.students.label_source!r}"
        )
    if s.faces.align not in ("none", "dlib5"):
        raise ConfigError(f"{s.profile}.faces.align must be 'none' or 'dlib5', got {s.faces.align!r}")
    if not 0 <= s.faces.align_padding <= 1:
        raise ConfigError(f"{s.profile}.faces.align_padding must be in [0, 1], got {s.faces.align_padding}")
    _number(s.faces.min_face, f"{s.profile}.faces.min_face", low=0, whole=True)
    if s.faces.workers < 1:
        raise ConfigError(f"{s.profile}.faces.workers must be >= 1, got {s.faces.workers}")
    if not s.teacher.members:
        raise ConfigError(f"{s.profile}.teacher.members must list at least one member")
    for key in ("members", "children"):
        if not isinstance(getattr(s.teacher, key), tuple):
            raise ConfigError(f"{s.profile}.teacher.{key} must be a list of members, "
                              f"got {getattr(s.teacher, key)!r}")
        for i, m in enumerate(getattr(s.teacher, key)):
            where = f"{s.profile}.teacher.{key}[{i}]"
            if isinstance(m, dict):
                if not isinstance(m.get("name"), str):
                    raise ConfigError(f"{where} must have a 'name' (a registered member such as "
                                      f"age_gender_onnx, caffe or torch), got {m!r}")
            elif not isinstance(m, str):
                raise ConfigError(f"{where} must be a member name or a mapping with 'name', got {m!r}")
    if s.teacher.variants not in (1, 8):
        raise ConfigError(f"{s.profile}.teacher.variants must be 1 (original only) or 8 (SPEC 3), "
                          f"got {s.teacher.variants}")
    if s.teacher.batch_size < 1:
        raise ConfigError(f"{s.profile}.teacher.batch_size must be >= 1, got {s.teacher.batch_size}")
    _validate_students(s)


def _number(value, where: str, *, low: float | None = None, low_open: bool = False, whole: bool = False,
            allow_none: bool = False):
    """A number setting, checked: a one-line ConfigError naming the key and the valid range."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and whole:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        kind = "a whole number" if whole else "a number"
        bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
        none = " or null" if allow_none else ""
        raise ConfigError(f"{where} must be {kind}{bound}{none}, got {value!r}; fix it in params.yaml")


def _validate_students(s: Settings) -> None:
    st, p = s.students, f"{s.profile}.students"
    _number(st.lr, f"{p}.lr", low=0, low_open=True, allow_none=True)
    _number(st.batch_size, f"{p}.batch_size", low=1, whole=True, allow_none=True)
    _number(st.max_train_faces, f"{p}.max_train_faces", low=1, whole=True, allow_none=True)
    _number(st.threads, f"{p}.threads", low=0, whole=True)
    _number(st.workers, f"{p}.workers", low=0, whole=True)
    _number(st.lr_step_epochs, f"{p}.lr_step_epochs", low=1, whole=True)
    _number(st.seed, f"{p}.seed", low=0, whole=True, allow_none=True)
    _number(st.patience, f"{p}.patience", low=1, whole=True, allow_none=True)
    _number(st.lr_gamma, f"{p}.lr_gamma", low=0, low_open=True)
    _number(st.momentum, f"{p}.momentum", low=0)
    _number(st.weight_decay, f"{p}.weight_decay", low=0)
    _number(s.teacher.threads, f"{s.profile}.teacher.threads", low=0, whole=True)
    if st.momentum >= 1:
        raise ConfigError(f"{p}.momentum must be below 1, got {st.momentum}")
    for name, allowed in (("weighting", ("none", "agreement")), ("balance", ("none", "band", "band_sqrt"))):
        if getattr(st, name) not in allowed:
            raise ConfigError(f"{p}.{name} must be one of {', '.join(allowed)}, got {getattr(st, name)!r}")
    for src in s.sources:
        if (1 - src.split.test) * (1 - src.split.val) < 0.02:
            raise ConfigError(f"{s.profile}: split test={src.split.test} val={src.split.val} leaves under 2% "
                              f"of source {src.id!r} for training; lower them")
