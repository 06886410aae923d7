"""params.yaml: find it, read it, layer a profile (base, its data set, its recipe, its own keys),
merge and validate it (``load_settings``), and say where each setting comes from (``param_sources``).
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agedistill_core.errors import ConfigError
from agedistill_core.settings.fields import _short
from agedistill_core.settings.messages import _adapter, _dotted, _Where
from agedistill_core.settings.sections import (DATASET_KEYS, RECIPE_KEYS, SECTIONS, TOP_LEVEL, FaceSettings, Settings,
                                               SplitSettings, _merge, _Merged)

PARAMS_ENV = "AGEDISTILL_PARAMS"
PROFILE_ENV = "AGEDISTILL_PROFILE"
REPO_ROOT = Path(__file__).resolve().parents[2]   # the repository (its params.yaml is the last resort)
# A profile name is a folder (data/<profile>), a Dagster asset-key prefix and part of partition keys:
# letters, digits and _ only, so that two names never map to one key or folder and none leaves data/.
PROFILE_NAME = re.compile(r"[A-Za-z0-9_]+")


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
    for cand in ("params.yaml", REPO_ROOT / "params.yaml"):
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
    _check_children(settings, where)
    _check_gt_weight(settings, where)
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


def _check_children(s: Settings, where: _Where) -> None:
    """The ``children`` head has 13 outputs (ages 0..12): it learns real ages (a teacher's vector
    has 101 bins) of children only (an older face's target would lie off its axis)."""
    cfg = s.students
    if cfg.loss != "children":
        return
    if cfg.label_source != "ground_truth":
        raise where.error(("students", "label_source"), "must be ground_truth with loss children (its 13 bins "
                                                        "cannot hold the teacher's 101); set label_source: ground_truth")
    if cfg.max_age is None or cfg.max_age > 12:
        raise where.error(("students", "max_age"), f"is {cfg.max_age}, but loss children covers ages 0..12 only; "
                                                   f"set students.max_age: 12")


def _check_gt_weight(s: Settings, where: _Where) -> None:
    """``gt_weight`` mixes real ages into the teacher's stored targets: it needs those targets, and
    the teacher in the loop would replace them with its labels of each view (the real ages unused)."""
    cfg = s.students
    if cfg.gt_weight and cfg.label_source != "teacher":
        raise where.error(("students", "gt_weight"), f"is {cfg.gt_weight:g}, but label_source {cfg.label_source} "
                                                     f"learns real ages alone; set gt_weight: 0 or label_source: teacher")
    if cfg.gt_weight and cfg.teacher_in_loop:
        raise where.error(("students", "gt_weight"), f"is {cfg.gt_weight:g}, but teacher_in_loop relabels every "
                                                     f"view with the teacher alone; set gt_weight: 0 or "
                                                     f"teacher_in_loop: false")


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
    repos = {s.params_path.parent.resolve(), REPO_ROOT}
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
