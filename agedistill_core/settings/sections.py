"""The settings: frozen dataclasses whose annotations are the schema (one per params.yaml section),
``Settings`` (one profile, merged and validated) and the paths of every artifact under its workdir.

``Settings.section_hash`` is the version of a stage's settings: it hashes the sections' values
only (``_jsonable``), so moving these classes between modules changes no hash.
"""
from __future__ import annotations

import copy
import hashlib
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, StrictBool, StrictStr, create_model

from agedistill_core.errors import ConfigError
from agedistill_core.settings.fields import (FORBID, MAX_CROP_SIZE, Aligner, Arch, CorruptionName, Count,
                                             DatasetName, Detector, Fraction, Loss, Member, NonNegative, Number,
                                             Seed, Severity, Share, Sources, Text, Whole, _as_tuple, _fixed,
                                             _SourceEntry)
from agedistill_core.settings.messages import _validate

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
    augment: Union[StrictBool, dict[StrictStr, Any]] = True  # SPEC's policy on/off, or augment options
                                       #   (students/augment.py), e.g. {color_p: 0.5, noise_p: 0.5}
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
    max_age: Optional[Annotated[Number, Field(ge=0, le=100)]] = None  # train and validate only on faces whose
                                       #   target age is <= this (children members: 12); None = every face
    gt_weight: Annotated[Number, Field(ge=0, le=1)] = 0  # distillation with real ages (Hinton's hard-label term):
                                       #   a training/validation face with a real age learns this share of it
                                       #   and the rest the teacher's; 0 = the teacher's alone
    resize: Literal["bilinear", "area", "area_denoise"] = "bilinear"  # how a crop becomes the input
                                       #   (images.resize_input): area averages pixel noise away when
                                       #   shrinking, area_denoise also smooths noisy crops; recorded in the
                                       #   checkpoint, so evaluation, predict and ONNX resize alike

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
        for n, keys in HASHED_WHEN_SET.items():
            if isinstance(payload.get(n), dict):
                defaults = type(getattr(self, n)).__dataclass_fields__
                for key in keys:
                    if payload[n][key] == defaults[key].default:
                        del payload[n][key]
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# Fields added after results existed, hashed only when set away from their default: a profile that
# does not use one keeps its hash, so its stage versions and finished results stay current.
HASHED_WHEN_SET = {"students": ("gt_weight", "resize")}


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

