"""Settings' field types: strict types (no "3" for 3, no true for 1), ranges, and the names a setting
may take, checked against the families' registries (``REGISTRIES``) when a profile is validated.
"""
from __future__ import annotations

import importlib
from typing import Annotated, Any, Optional, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictFloat, StrictInt,
                      StrictStr)


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


def _short(value: Any) -> str:
    """A value as a message shows it (60 characters at most)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
