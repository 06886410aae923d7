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
the dataclasses of ``sections`` (their annotations carry the types, ranges and choices), so a
typo fails at start-up in one line naming the profile, the key and where to fix it,
not an hour into a run.  docs/PARAMS.md describes the file.

The package, by concern: ``fields`` (field types, ranges, the registries names are checked
against), ``sections`` (the dataclasses, ``Settings`` and its paths), ``messages`` (one-line error
wording) and ``params`` (finding, layering, merging and validating params.yaml).  Everything else
imports the names below from ``agedistill_core.settings``.
"""
from agedistill_core.settings.fields import MAX_CROP_SIZE, REGISTRIES, SEED_LIMIT, registered
from agedistill_core.settings.params import (PARAMS_ENV, PROFILE_ENV, PROFILE_NAME, find_params, load_raw,
                                             load_settings, param_sources)
from agedistill_core.settings.sections import (DATASET_KEYS, RECIPE_KEYS, SECTIONS, SOURCE_KEYS, TOP_LEVEL,
                                               CorruptionSettings, DatasetSettings, EvalSettings, FaceSettings,
                                               Settings, Source, SplitSettings, StudentSettings, TeacherSettings)

__all__ = [
    "CorruptionSettings", "DATASET_KEYS", "DatasetSettings", "EvalSettings", "FaceSettings", "MAX_CROP_SIZE",
    "PARAMS_ENV", "PROFILE_ENV", "PROFILE_NAME", "RECIPE_KEYS", "REGISTRIES", "SECTIONS", "SEED_LIMIT",
    "SOURCE_KEYS", "Settings", "Source", "SplitSettings", "StudentSettings", "TOP_LEVEL", "TeacherSettings",
    "find_params", "load_raw", "load_settings", "param_sources", "registered",
]
