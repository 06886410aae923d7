"""Typed settings read from ``params.yaml``: one file for Dagster, DVC and the CLI.

``params.yaml`` names each data set once (``datasets:``), each training recipe once
(``recipes:``) and each experiment as a profile (``profiles:``) that picks one of each
and may override any setting::

    base:     {seed: 0, faces: {...}, students: {...}, ...}     # every default
    datasets: {utkface: {dataset: {...}, faces: {...}, workdir: data/utkface}}
    recipes:  {short: {students: {epochs: 6, ...}}}
    profiles: {utkface_short: {dataset: utkface, recipe: short, students: {seed: 1}}}

A profile's settings are ``base``, then its data set, then its recipe, then its own
keys, deep-merged in that order (a profile may also give ``dataset`` as a mapping: a
data set of its own).  A profile is chosen by ``--profile``, ``$AGEDISTILL_PROFILE`` or
the file's ``default_profile``.  The merge is validated once, here, by pydantic against
the dataclasses below (their annotations carry the types, ranges and choices), so a
typo fails at start-up in one line naming the profile, the key and where to fix it,
not an hour into a run.  docs/PARAMS.md describes the file.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import json
import os
import re
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool, StrictFloat,
                      StrictInt, StrictStr, TypeAdapter, ValidationError, create_model)

from agedistill_core.errors import ConfigError

PARAMS_ENV = "AGEDISTILL_PARAMS"
PROFILE_ENV = "AGEDISTILL_PROFILE"


# -- field types: strict (no "3" for 3, no true for 1), whole numbers where counts are meant --------

def _whole(value: Any) -> Any:
    """3.0 -> 3 (YAML writes some whole numbers as floats); anything else is left to the int check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _as_tuple(value: Any) -> Any:
    """A YAML list -> tuple; one bare name -> a tuple of it (``archs: mn3_small``)."""
    if isinstance(value, list):
        return tuple(value)
    return (value,) if isinstance(value, str) else value


def _names(container: Any) -> list:
    return container.names() if hasattr(container, "names") else list(container)


# Where the valid names of a setting live.  They are looked up when a profile is validated, not
# when this module is imported: the registries sit in the layers above this one (datasets, faces,
# students, corruptions, teacher; tests/core/test_layers.py), and a newly registered detector,
# student or loss is then valid without an edit here.
REGISTRIES = {
    "dataset": ("agedistill_core.datasets", "DATASETS"),
    "detector": ("agedistill_core.faces.detectors", "DETECTORS"),
    "align": ("agedistill_core.faces.align", "ALIGNERS"),
    "student": ("agedistill_core.students.zoo", "STUDENTS"),
    "loss": ("agedistill_core.students.losses", "LOSSES"),
    "corruption": ("agedistill_core.corruptions", "CORRUPTIONS"),
    "severity": ("agedistill_core.corruptions.params", "SEVERITIES"),
    "teacher member": ("agedistill_core.inference.member", "MEMBERS"),  # teacher.members + torch
}


def registered(kind: str) -> Any:
    """The registry (or tuple) of valid names for ``kind`` (a key of REGISTRIES)."""
    module, attr = REGISTRIES[kind]
    return getattr(importlib.import_module(module), attr)


def _one_of(kind: str) -> AfterValidator:
    def check(value: Any) -> Any:
        choices = registered(kind)
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, _names(choices)))}")
        return value
    return AfterValidator(check)


def _fixed(*choices: Any) -> AfterValidator:
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value
    return AfterValidator(check)


Whole = Annotated[int, Strict(), BeforeValidator(_whole)]
# A number keeps its type (12 stays 12, not 12.0): section hashes of existing runs depend on it.
Number = Union[StrictInt, Annotated[StrictFloat, Field(allow_inf_nan=False)]]
Count = Annotated[Whole, Field(ge=1)]
NonNegative = Annotated[Whole, Field(ge=0)]
Share = Annotated[Number, Field(ge=0, lt=1)]
Fraction = Annotated[Number, Field(ge=0, le=1)]
Text = Annotated[StrictStr, Field(min_length=1)]
DatasetName = Annotated[StrictStr, _one_of("dataset")]
Detector = Annotated[StrictStr, _one_of("detector")]
Aligner = Annotated[StrictStr, _one_of("align")]
Arch = Annotated[StrictStr, _one_of("student")]
Loss = Annotated[StrictStr, _one_of("loss")]
CorruptionName = Annotated[StrictStr, _one_of("corruption")]
Severity = Annotated[Whole, _one_of("severity")]
SourceId = Annotated[StrictStr, Field(min_length=1, pattern=r"^[^/]+$")]
SEED_LIMIT = 2**32                     # seeds feed numpy / torch generators: 0 <= seed < 2**32
Seed = Annotated[Whole, Field(ge=0, lt=SEED_LIMIT)]
MAX_CROP_SIZE = 1024                   # faces.crop_size above this only costs memory (a 100000 px crop is 30 GB)
# A profile name is a folder (data/<profile>), a Dagster asset-key prefix and part of partition keys:
# letters, digits and _ only, so that two names never map to one key or folder and none leaves data/.
PROFILE_NAME = re.compile(r"[A-Za-z0-9_]+")


def _member(value: Any) -> Any:
    """A teacher member: a registered name, or a mapping {name: <registered>, ...its options}."""
    name = value.get("name") if isinstance(value, dict) else value
    if not isinstance(name, str):
        raise ValueError(f"must be a member name or a mapping with 'name' (e.g. age_gender_onnx, or "
                         f"{{name: caffe, prototxt: ..., caffemodel: ...}}), got {_short(value)}")
    members = registered("teacher member")
    if name not in members:
        raise ValueError(f"{name!r} is not one of {', '.join(members.names())}")
    return value


Member = Annotated[Any, AfterValidator(_member)]
FORBID = ConfigDict(extra="forbid")


class _SourceEntry(BaseModel):
    """One entry of ``dataset.sources`` (its ``faces`` / ``split`` are checked merged over the profile's)."""
    model_config = FORBID
    id: SourceId
    name: DatasetName
    root: Text
    limit: Optional[Count] = None
    faces: Optional[dict[StrictStr, Any]] = None
    split: Optional[dict[StrictStr, Any]] = None


def _source_dicts(entries: tuple) -> tuple:
    """Sources are kept as the mappings params.yaml gives (the dataset section hash hashes them)."""
    ids = [e.id for e in entries]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"source id(s) {', '.join(twice)} appear twice; ids must be unique")
    return tuple(e.model_dump(exclude_unset=True) for e in entries)


Sources = Annotated[tuple[_SourceEntry, ...], BeforeValidator(_as_tuple), AfterValidator(_source_dicts)]


# -- the settings: frozen dataclasses whose annotations are the schema ---------------------------

@dataclass(frozen=True)
class DatasetSettings:
    __pydantic_config__ = FORBID
    name: DatasetName = "demo"         # a key of agedistill_core.datasets.DATASETS
    root: Text = "data/demo/raw"       # data root; relative paths are relative to params.yaml
    limit: Optional[Count] = None      # keep at most this many images (fixed-seed sample)
    # Several sources as one corpus: each a mapping {id, name, root, limit?, faces?, split?}
    # (``faces`` / ``split`` override the profile's for that source only).  Empty: the
    # single source above, whose id is ``name``.
    sources: Sources = ()


@dataclass(frozen=True)
class SplitSettings:
    __pydantic_config__ = FORBID
    test: Share = 0.2                  # share of images (or subjects) in the test split
    val: Share = 0.2                   # share of the rest that validates (SPEC: 2 of 10)


@dataclass(frozen=True)
class FaceSettings:
    __pydantic_config__ = FORBID
    detector: Detector = "none"        # a key of agedistill_core.faces.DETECTORS
    align: Aligner = "none"            # none (square box + margin) | dlib5 (5-point landmark chip)
    align_padding: Fraction = 0.2      # dlib5 chip padding (dlib's default; the age network's framing)
    margin: Fraction = 0.2             # SPEC 2: square box + 0.2 on each side
    crop_size: Annotated[Whole, Field(ge=16, le=MAX_CROP_SIZE)] = 160  # stored crop side in pixels
    min_score: Fraction = 0.5
    whole_image_fallback: StrictBool = True  # a crop with no detection becomes its own box
    whole_image_max_side: NonNegative = 512  # ...if its longer side is at most this (larger: a photo -> no_face)
    min_face: NonNegative = 24         # a face box under this many pixels (shorter side) is `too_small`; 0 = off
    jpeg_quality: Annotated[Whole, Field(ge=1, le=100)] = 95
    workers: Count = 1


@dataclass(frozen=True)
class Source:
    """One folder of the corpus, resolved: its adapter, root, framing and split shares."""
    id: str                        # prefix of its image ids and value of the manifest's `dataset`
    name: str                      # the adapter (a key of agedistill_core.datasets.DATASETS)
    root: Path
    faces: FaceSettings
    split: SplitSettings
    limit: int | None = None


SOURCE_KEYS = set(_SourceEntry.model_fields)


@dataclass(frozen=True)
class TeacherSettings:
    __pydantic_config__ = FORBID
    # Each member: a registered name (string) or a mapping {name: <registered>, ...options},
    # e.g. {name: caffe, prototxt: p, caffemodel: m, bins: 101} or {name: torch, checkpoint: c}.
    members: Annotated[tuple[Member, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = ("age_gender_onnx",)
    children: Annotated[tuple[Member, ...], BeforeValidator(_as_tuple)] = ()  # children specialists; gate below
    children_gate: Annotated[Number, Field(ge=0)] = 12.0  # SPEC 3: children members decide when general age <= this
    variants: Annotated[Whole, _fixed(1, 8)] = 8  # SPEC 3 test-time variants: 8, or 1 (original only)
    batch_size: Count = 64             # faces per batch (x variants per member forward pass)
    threads: NonNegative = 0           # onnxruntime / torch intra-op threads; 0 = all cores
    prefetch: StrictBool = True        # decode the next batch in a thread while the networks run


@dataclass(frozen=True)
class StudentSettings:
    __pydantic_config__ = FORBID
    archs: Annotated[tuple[Arch, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = ("mn3_small",)
    loss: Loss = "paper"               # a key of agedistill_core.students.losses.LOSSES
    weighting: Literal["none", "agreement"] = "none"
    epochs: Count = 70
    lr: Optional[Annotated[Number, Field(gt=0)]] = None  # None: the architecture's SPEC learning rate
    lr_step_epochs: Count = 20
    lr_gamma: Annotated[Number, Field(gt=0)] = 0.2
    lr_schedule: Literal["step", "cosine"] = "step"  # step: x lr_gamma every lr_step_epochs (SPEC) | cosine to 0
    input_size: Optional[Annotated[Whole, Field(ge=32, le=512)]] = None  # None: the architecture's SPEC input size
    momentum: Annotated[Number, Field(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[Number, Field(ge=0)] = 0.0
    batch_size: Optional[Count] = None  # None: the architecture's SPEC batch size
    augment: StrictBool = True
    max_train_faces: Optional[Count] = None
    workers: NonNegative = 0           # DataLoader worker processes
    pretrained_dir: Optional[StrictStr] = None  # folder of local timm weights; None: from scratch
    label_source: Literal["teacher", "ground_truth"] = "teacher"  # distillation | baseline
    init_checkpoint: Optional[StrictStr] = None  # start from this student checkpoint (fine-tuning); None: fresh
    tag: Optional[StrictStr] = None    # appended to the run folder name (keeps variants apart)
    threads: NonNegative = 0           # torch intra-op threads; 0 = torch default (all cores)
    cache_crops: StrictBool = False    # no effect: crops are always decoded once, to the input size (kept for old params)
    sources: Annotated[tuple[StrictStr, ...], BeforeValidator(_as_tuple)] = ()  # only these source ids; () = all
    balance: Literal["none", "band", "band_sqrt"] = "none"  # re-weight faces against age-band imbalance
    channels_last: StrictBool = True   # NHWC memory format (faster convolutions on CPU)
    seed: Optional[Seed] = None  # training seed (init, order, augmentation); None = the profile's seed
    patience: Optional[Count] = None   # stop once the rate has decayed twice and val loss has not improved
                                       #   for this many epochs (convergence); None = always all epochs (SPEC)
    init_from: Optional[StrictStr] = None  # warm start: this student checkpoint's weights only (a new run, own
                                       #   schedule); init_checkpoint is its older name; relative to params.yaml
    lr_factor: Annotated[Number, Field(gt=0)] = 1  # x the rate (students.lr or the architecture's): SPEC 5 fine-tuning 0.1
    folds: Annotated[Whole, Field(ge=2, le=100)] = 5  # group protocol (loss groups | ordinal): k fixed-seed folds
                                       #   stratified by group, where the data set has no official folds
    teacher_in_loop: StrictBool = False  # consistent teaching: the teacher (1 variant) labels each augmented view
    mixup: Annotated[Number, Field(ge=0, le=100)] = 0  # with teacher_in_loop: mixup between faces, Beta(a, a); 0 = off

    @property
    def init_path(self) -> Optional[str]:
        """The warm-start checkpoint: ``init_from``, or its older name ``init_checkpoint``."""
        return self.init_from or self.init_checkpoint


@dataclass(frozen=True)
class CorruptionSettings:
    """LFW+C-style robustness set: the base split's crops x corruptions x severities."""
    __pydantic_config__ = FORBID
    enabled: StrictBool = True         # materialise lfwc_images in `materialize_all` / the CLI `all`
    base_split: Literal["train", "val", "test"] = "test"  # which split of the label table is corrupted
    names: Annotated[tuple[CorruptionName, ...], BeforeValidator(_as_tuple)] = ()  # () = all (SPEC's 13)
    severities: Annotated[tuple[Severity, ...], BeforeValidator(_as_tuple), Field(min_length=1)] = (1, 2, 3, 4, 5)
    max_faces: Optional[Count] = None  # fixed-seed subset of the base split (None = all)
    seed: Seed = 0
    workers: Count = 1


@dataclass(frozen=True)
class EvalSettings:
    __pydantic_config__ = FORBID
    batch_size: Count = 128


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
            faces = _validate(FaceSettings, _merge(asdict(self.faces), raw.get("faces") or {}), f"{where}.faces")
            split = _validate(SplitSettings, _merge(asdict(self.split), raw.get("split") or {}), f"{where}.split")
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


# The sections, as Settings declares them (name -> dataclass, in order).
SECTIONS = {name: cls for name, cls in typing.get_type_hints(Settings).items()
            if isinstance(cls, type) and hasattr(cls, "__dataclass_fields__")}
TOP_LEVEL = {"workdir", "seed", "shard_size"}
# What a data set (``datasets.<name>``) and a recipe (``recipes.<name>``) may hold.
DATASET_KEYS = ("dataset", "split", "faces", "shard_size", "workdir")
RECIPE_KEYS = ("students", "evaluate", "corruptions")


# One profile, merged: every section (from SECTIONS) plus the top-level keys.
_Merged = create_model(
    "_Merged", __config__=FORBID,
    **{name: (cls, Field(default_factory=cls)) for name, cls in SECTIONS.items()},
    workdir=(Optional[Text], None),    # default data/<profile>
    seed=(Seed, 0),
    shard_size=(Count, 2000),          # faces per shard
)


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


# -- one-line errors from pydantic's -------------------------------------------------------------

_BRANCH = re.compile(r"^(int|float|str|bool|none|function-\w+\[.*\]|.*\[.*\])$")  # union / wrapper tags in a loc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _clean(loc: tuple) -> tuple:
    return tuple(p for p in loc if isinstance(p, int) or not _BRANCH.match(p))


def _fields_at(cls: Any, loc: tuple) -> list[str]:
    """The valid keys of the mapping at ``loc`` under model/dataclass ``cls`` (for unknown-key errors)."""
    for part in loc:
        if isinstance(part, int):
            continue
        hints = typing.get_type_hints(cls, include_extras=False) if not hasattr(cls, "model_fields") else \
            {k: f.annotation for k, f in cls.model_fields.items()}
        ann = hints.get(part)
        found = None
        stack = [ann]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and (hasattr(t, "model_fields") or hasattr(t, "__dataclass_fields__")):
                found = t
                break
            stack.extend(typing.get_args(t))
        if found is None:
            return []
        cls = found
    if hasattr(cls, "model_fields"):
        return sorted(cls.model_fields)
    return sorted(cls.__dataclass_fields__)


def _what(err: dict, errors: list[dict]) -> str:
    kind, ctx, got = err["type"], err.get("ctx") or {}, f", got {_short(err.get('input'))}"
    if kind == "int_type" and err["loc"][-1:] == ("int",):   # a Number: say what its float branch says
        other = [e for e in errors if e is not err and _clean(e["loc"]) == _clean(err["loc"])]
        if other:
            return f"must be a number{got}" if other[0]["type"] == "float_type" else _what(other[0], errors)
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be a whole number{got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind == "bool_type":
        return f"must be true or false{got}"
    if kind == "string_type":
        return f"must be text{got}"
    if kind in ("tuple_type", "list_type"):
        return f"must be a list{got}"
    if kind in ("dict_type", "model_type", "dataclass_type", "model_attributes_type", "dataclass_exact_type"):
        return f"must be a mapping{got}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{_short(err.get('input'))} is not one of {expected}"
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
              "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        limit = ctx.get(key)
        shown = "2**32 (seeds are 32-bit)" if op == "<" and limit == SEED_LIMIT else limit
        return f"must be {op} {shown}{got}"
    if kind == "too_short":
        return f"must list at least {ctx.get('min_length')}{got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"must not contain '/'{got}"
    if kind == "missing":
        return "is missing"
    if kind == "value_error":
        return str(ctx.get("error") or err["msg"])
    return f"{err['msg']}{got}"


class _Where:
    """Says where a setting came from: the dotted params.yaml key (of the last layer that sets it)."""

    def __init__(self, path: Path, profile: str, layers: list[tuple[str, dict]], overrides: dict | None):
        self.path, self.profile, self.layers, self.overrides = path, profile, layers, overrides or {}

    @staticmethod
    def _has(tree: Any, loc: tuple) -> bool:
        for part in loc:
            if isinstance(part, int):
                if not isinstance(tree, list) or part >= len(tree):
                    return False
            elif not isinstance(tree, dict) or part not in tree:
                return False
            tree = tree[part]
        return True

    def origin(self, loc: tuple) -> str:
        for depth in range(len(loc), 0, -1):
            if self._has(self.overrides, loc[:depth]):
                return "given on the command line"
            for prefix, layer in reversed(self.layers):
                if self._has(layer, loc[:depth]):
                    return f"fix it in {self.path.name} ({_dotted((prefix, *loc[:depth]))})"
        return f"fix it in {self.path.name} (profiles.{self.profile})"

    def error(self, loc: tuple, what: str) -> ConfigError:
        return ConfigError(f"{_dotted((self.profile, *loc))}: {what}; {self.origin(loc)}")

    def from_pydantic(self, exc: ValidationError, root: Any, prefix: tuple = ()) -> ConfigError:
        """The first of pydantic's errors in one line (all the unknown keys of one mapping at once)."""
        errors = exc.errors(include_url=False)
        first = errors[0]
        loc = _clean(first["loc"])
        if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            unknown = sorted({str(_clean(e["loc"])[-1]) for e in errors
                              if e["type"] == first["type"] and _clean(e["loc"])[:-1] == loc[:-1]})
            valid = _fields_at(root, loc[:-1])
            parent = (*prefix, *loc[:-1])
            return ConfigError(f"{_dotted((self.profile, *parent))}: unknown key(s) {', '.join(unknown)}"
                               + (f"; valid keys: {', '.join(valid)}" if valid else "")
                               + f"; {self.origin((*parent, unknown[0]))}")
        return self.error((*prefix, *loc), _what(first, errors))


@functools.lru_cache(maxsize=None)
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def _validate(cls: type, raw: Any, where: str) -> Any:
    """One section (e.g. a source's merged ``faces``) validated; ``where`` prefixes the error."""
    try:
        return _adapter(cls).validate_python(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = _clean(err["loc"])
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            what = f"unknown key(s) {loc[-1]}; valid keys: {', '.join(_fields_at(cls, loc[:-1]))}"
            loc = loc[:-1]
        else:
            what = _what(err, exc.errors(include_url=False))
        raise ConfigError(f"{_dotted((where, *loc))}: {what}; fix it in params.yaml") from None


# -- params.yaml: find, read, layer, merge ------------------------------------------------------

def find_params(path: str | os.PathLike | None = None) -> Path:
    """The params file: the argument, else $AGEDISTILL_PARAMS, else ./params.yaml, else the repo's."""
    explicit = path or os.environ.get(PARAMS_ENV)
    if explicit:
        if Path(explicit).is_dir():
            raise ConfigError(f"params file {explicit} is a directory; pass the file itself "
                              f"(--params {Path(explicit) / 'params.yaml'}) or set {PARAMS_ENV}")
        if not Path(explicit).is_file():
            raise ConfigError(f"params file {explicit} not found; pass --params PATH or set {PARAMS_ENV}")
        return Path(explicit).resolve()
    for cand in ("params.yaml", Path(__file__).resolve().parents[1] / "params.yaml"):
        if Path(cand).is_file():
            return Path(cand).resolve()
    raise ConfigError(f"no params.yaml in {os.getcwd()}; run from the repo root or set {PARAMS_ENV}")


def load_raw(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          f"save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("profiles"), dict):
        raise ConfigError(f"{path} must have a 'profiles' mapping (and optionally 'base', 'datasets', 'recipes')")
    for key in ("base", "datasets", "recipes"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping, got {_short(raw[key])}")
    return raw


def _choices(names: Any) -> str:
    """Keys of a params.yaml mapping, sorted, for a message (YAML may make some of them numbers)."""
    return ", ".join(sorted(map(str, names))) or "(none)"


def _profile_name(path: Path, raw: dict, profile: str | None) -> str:
    profiles = raw["profiles"]
    name = profile or os.environ.get(PROFILE_ENV) or raw.get("default_profile")
    if name is None or name == "":
        raise ConfigError(f"{path}: no profile given and no default_profile; choose one of: {_choices(profiles)}")
    if not isinstance(name, (str, int, float, bool)):
        raise ConfigError(f"{path}: default_profile must be a profile name, got {_short(name)}; choose one of: "
                          f"{_choices(profiles)}; fix it in {path.name} (default_profile)")
    if name not in profiles:
        numeric = [k for k in profiles if not isinstance(k, str) and str(k) == str(name)]
        if numeric:
            raise ConfigError(f"{path}: profile key {numeric[0]!r} is a number, not a name; profile names are "
                              f"letters, digits and _ (e.g. p{numeric[0]}); rename it under profiles:")
        raise ConfigError(f"{path}: unknown profile {name!r}; choose one of: {_choices(profiles)}")
    if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
        suggestion = re.sub(r"[^A-Za-z0-9_]", "_", str(name))
        raise ConfigError(f"{path}: profile name {name!r} may hold only letters, digits and _ ([A-Za-z0-9_]+: it "
                          f"names the workdir data/<profile>, Dagster asset keys and partitions); rename it "
                          f"(e.g. {suggestion}) under profiles:")
    if profiles[name] is not None and not isinstance(profiles[name], dict):
        raise ConfigError(f"{path}: profiles.{name} must be a mapping, got {_short(profiles[name])}")
    return name


def _reference(path: Path, raw: dict, name: str, key: str) -> str | None:
    """The data set or recipe profile ``name`` names (``dataset: utkface``), checked; None if none."""
    group, allowed = ("datasets", DATASET_KEYS) if key == "dataset" else ("recipes", RECIPE_KEYS)
    ref = (raw["profiles"][name] or {}).get(key)
    if ref is None or (key == "dataset" and isinstance(ref, dict)):
        return None                      # no recipe, or a data set of the profile's own
    known = raw.get(group) or {}
    what = "data set" if key == "dataset" else "recipe"
    fix = f"fix it in {path.name}"
    if not isinstance(ref, str) or ref not in known:
        raise ConfigError(f"{name}.{key}: {_short(ref)} is not a {what} under '{group}:'; known: "
                          f"{_choices(known)}; {fix} (profiles.{name}.{key})")
    entry = known[ref]
    if entry is not None and not isinstance(entry, dict):
        raise ConfigError(f"{name}: {what} {ref!r} must be a mapping, got {_short(entry)}; {fix} ({group}.{ref})")
    unknown = sorted(map(str, set(entry or {}) - set(allowed)))
    if unknown:
        other = "the recipe or the profile" if key == "dataset" else "the data set or the profile"
        raise ConfigError(f"{name}: {what} {ref!r} has unknown key(s) {', '.join(unknown)}; a {what} holds "
                          f"{', '.join(allowed)} (put the others in {other}); {fix} ({group}.{ref}.{unknown[0]})")
    return ref


def _layers(path: Path, raw: dict, name: str) -> list[tuple[str, dict]]:
    """(dotted prefix, mapping) of each layer of profile ``name``, in merge order."""
    dataset, recipe = _reference(path, raw, name, "dataset"), _reference(path, raw, name, "recipe")
    own = dict(raw["profiles"][name] or {})
    own.pop("recipe", None)
    if dataset is not None:
        own.pop("dataset")
    layers = [("base", raw.get("base") or {})]
    if dataset is not None:
        layers.append((f"datasets.{dataset}", raw["datasets"][dataset] or {}))
    if recipe is not None:
        layers.append((f"recipes.{recipe}", raw["recipes"][recipe] or {}))
    layers.append((f"profiles.{name}", own))
    return layers


def param_sources(profile: str | None = None, params: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Where each setting of a profile comes from in params.yaml: for every section and
    top-level key (``faces``, ``students``, ``seed`` ...), the dotted params.yaml keys
    whose values are merged into it, in merge order, listing only keys that exist.

    A profile's ``dataset: <name>`` / ``recipe: <name>`` reference is listed (before the
    data set's / recipe's own key) for every key a data set / recipe may set: pointing it
    elsewhere changes those settings.  dvc.yaml's ``params`` are built from this
    (``agedistill_core.stages``), so DVC sees a change wherever in params.yaml it is made."""
    path = find_params(params)
    raw = load_raw(path)
    name = _profile_name(path, raw, profile)
    out: dict[str, list[str]] = {}
    for key in [*SECTIONS, *sorted(TOP_LEVEL)]:
        keys = []
        for prefix, layer in _layers(path, raw, name):
            ref = "dataset" if prefix.startswith("datasets.") else "recipe" if prefix.startswith("recipes.") else None
            if ref is not None and key in (DATASET_KEYS if ref == "dataset" else RECIPE_KEYS):
                keys.append(f"profiles.{name}.{ref}")
            if key in layer:
                keys.append(f"{prefix}.{key}")
        out[key] = keys
    return out


def load_settings(
    profile: str | None = None,
    params: str | os.PathLike | None = None,
    overrides: dict | None = None,
) -> Settings:
    """Read, merge and validate one profile of ``params.yaml``."""
    path = find_params(params)
    raw = load_raw(path)
    name = _profile_name(path, raw, profile)
    layers = _layers(path, raw, name)
    merged: dict = {}
    for _prefix, layer in layers:
        merged = _merge(merged, layer)
    merged = _merge(merged, overrides or {})
    where = _Where(path, name, layers, overrides)
    unknown = sorted(map(str, set(merged) - set(SECTIONS) - TOP_LEVEL))
    if unknown:
        valid = sorted(set(SECTIONS) | TOP_LEVEL | {"recipe"})
        raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}; "
                          f"{where.origin((unknown[0],))}")
    try:
        m = _Merged.model_validate(merged)
    except ValidationError as exc:
        raise where.from_pydantic(exc, _Merged) from None
    workdir = Path(m.workdir or f"data/{name}").expanduser()
    if not workdir.is_absolute():
        workdir = path.parent / workdir
    settings = Settings(profile=name, params_path=path, workdir=workdir, seed=m.seed, shard_size=m.shard_size,
                        **{key: getattr(m, key) for key in SECTIONS})
    _check_sources(settings, where)
    _check_unique(settings, where)
    _check_workdir(settings, where)
    return settings


# lists whose entries name partitions or runs: an entry twice would do the same work twice
UNIQUE = {("students", "archs"): "architecture", ("students", "sources"): "source id",
          ("corruptions", "names"): "corruption", ("corruptions", "severities"): "severity"}


def _check_unique(s: Settings, where: _Where) -> None:
    for (section, key), what in UNIQUE.items():
        values = list(getattr(getattr(s, section), key))
        twice = [v for v in dict.fromkeys(values) if values.count(v) > 1]
        if twice:
            raise where.error((section, key), f"lists {', '.join(map(repr, twice))} more than once; "
                                              f"name each {what} once")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_workdir(s: Settings, where: _Where) -> None:
    """The workdir gets crops/, labels/, students/ ... and is written over: never the file-system root,
    the repository (or a folder holding it), nor inside a data root (the next manifest would read the
    pipeline's own plots and crops as photos)."""
    work = s.workdir.resolve()
    fix = f"set workdir to a folder of its own (default data/{s.profile}); {where.origin(('workdir',))}"
    if work == Path(work.anchor):
        raise ConfigError(f"{_dotted((s.profile, 'workdir'))}: {s.workdir} is the file-system root; {fix}")
    repos = {s.params_path.parent.resolve(), Path(__file__).resolve().parents[1]}
    for repo in sorted(repos):
        if _inside(repo, work):
            what = "is the repository" if repo == work else f"holds the repository {repo}"
            raise ConfigError(f"{_dotted((s.profile, 'workdir'))}: {s.workdir} {what}; {fix}")
    for src in s.sources:
        root = src.root.resolve()
        if _inside(work, root):
            raise ConfigError(f"{_dotted((s.profile, 'workdir'))}: {s.workdir} is inside the data root {src.root} "
                              f"of source {src.id!r}: the next manifest would read the pipeline's own outputs as "
                              f"photos; {fix}")


def _check_sources(s: Settings, where: _Where) -> None:
    """What one section cannot check alone: per-source framing and splits, ``students.sources``."""
    for i, raw in enumerate(s.dataset.sources):
        for key, cls in (("faces", FaceSettings), ("split", SplitSettings)):
            try:
                _adapter(cls).validate_python(_merge(asdict(getattr(s, key)), raw.get(key) or {}))
            except ValidationError as exc:
                raise where.from_pydantic(exc, cls, ("dataset", "sources", i, key)) from None
    srcs = s.sources
    for i, src in enumerate(srcs):
        loc = ("dataset", "sources", i) if s.dataset.sources else ("split",)
        if (src.faces.crop_size, src.faces.margin) != (s.faces.crop_size, s.faces.margin):
            raise where.error(loc, f"source {src.id!r} changes faces.crop_size or faces.margin; students need "
                                   "one framing size and margin: set them in the data set's faces")
        if (1 - src.split.test) * (1 - src.split.val) < 0.02:
            raise where.error(loc, f"split test={src.split.test} val={src.split.val} leaves under 2% of source "
                                   f"{src.id!r} for training; lower them")
    ids = [src.id for src in srcs]
    for sid in s.students.sources:
        if sid not in ids:
            raise where.error(("students", "sources"), f"{sid!r} is not a source of the data set; "
                                                       f"choose from: {', '.join(sorted(ids))}")
