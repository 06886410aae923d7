"""One params.yaml profile as Dagster sees it: key prefix, partitions, versions.

Definitions are built for one profile (``definitions.build_definitions``).  Every
asset key starts with the profile's name (``demo/face_crops``) and the shard
partitions are named after it (``shards_demo``), so two profiles materialised into
one Dagster instance never share a key, a partition set or a materialisation.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import dagster as dg

from agedistill_core.errors import ConfigError
from agedistill_core.pipeline import STAGE, settings_version, stage, stage_version
from agedistill_core.settings import Settings, load_settings
from agedistill_core.students.train import run_name
from agedistill_dag.partitions import STUDENT_ARCHS, lfwc_partitions
from agedistill_dag.resources import AgedistillConfig


# dagster-celery's routing tag: a step goes to the Celery queue it names (default queue: "dagster").
QUEUE_TAG = "dagster-celery/queue"
GPU_QUEUE = "gpu"


@dataclass(frozen=True)
class Profile:
    settings: Settings           # as loaded when the definitions were built
    params: str | None = None    # the params.yaml path given, if any

    @classmethod
    def load(cls, profile: str | None = None, params: str | None = None) -> "Profile":
        """``profile`` or $AGEDISTILL_PROFILE or params.yaml's default_profile."""
        return cls(load_settings(profile, params), None if params is None else str(params))

    @property
    def name(self) -> str:
        return self.settings.profile

    @property
    def prefix(self) -> str:
        """The profile name as a Dagster name (letters, digits, underscores)."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.name)

    def key(self, asset: str) -> dg.AssetKey:
        return dg.AssetKey([self.prefix, asset])

    @cached_property
    def shards(self) -> dg.DynamicPartitionsDefinition:
        """Shard ids ("shard-00000", ...), registered by this profile's face_manifest."""
        return dg.DynamicPartitionsDefinition(name=f"shards_{self.prefix}")

    @cached_property
    def runs(self) -> dict[str, str]:
        """Student partition key (the run name: architecture + what differs from the default
        recipe, e.g. ``mn3_small-gt-s1``) -> architecture, for the five students."""
        return {run_name(self.settings, arch): arch for arch in STUDENT_ARCHS}

    @cached_property
    def students(self) -> dg.StaticPartitionsDefinition:
        return dg.StaticPartitionsDefinition(list(self.runs))

    def code_version(self, stage_name: str) -> str:
        """A stage's code version: the hash of the settings sections it reads."""
        return settings_version(self.settings, stage_name)

    def partitions(self, stage_name: str) -> dg.PartitionsDefinition | None:
        kind = stage(stage_name).partitions
        return {None: None, "shards": self.shards, "lfwc": lfwc_partitions, "students": self.students}[kind]

    def asset_args(self, stage_name: str, description: str) -> dict:
        """``@dg.asset`` arguments of a stage's asset, from the stage table
        (``agedistill_core.pipeline.STAGES``): key, group, partitions, upstream assets, code version,
        and for an accelerated stage (training) the Celery queue of GPU workers."""
        st = stage(stage_name)
        return dict(key=self.key(st.asset), group_name=st.group, partitions_def=self.partitions(stage_name),
                    deps=[self.key(STAGE[need].asset) for need in st.needs],
                    code_version=self.code_version(stage_name), description=description,
                    op_tags={QUEUE_TAG: GPU_QUEUE} if st.accelerated else None)

    def config(self) -> AgedistillConfig:
        return AgedistillConfig(profile=self.name, params=self.params)

    def run_settings(self, config: AgedistillConfig, context, stage: str) -> Settings:
        """The settings a run of ``stage`` uses, read now.  Another profile's settings are
        refused (they would write under this profile's keys); settings changed since the
        definitions were loaded are used, with a warning (the UI compares against the
        code version it loaded until the code location is reloaded)."""
        settings = config.settings()
        if settings.profile != self.name:
            raise ConfigError(f"these assets belong to profile {self.name!r} but the run's config selects "
                              f"profile {settings.profile!r}; load the definitions for that profile "
                              f"(AGEDISTILL_PROFILE={settings.profile}) instead of changing the resource")
        now = settings_version(settings, stage)
        if now != self.code_version(stage):
            context.log.warning(f"{stage}: params.yaml changed since the definitions were loaded (code version "
                                f"{self.code_version(stage)} -> {now}); reload the code location")
        return settings


def data_version(settings: Settings, stage: str, key=None) -> dg.DataVersion | None:
    """The data version of what ``stage`` wrote for ``key`` (``agedistill_core.pipeline.stage_version``)."""
    version = stage_version(settings, stage, key)
    return None if version is None else dg.DataVersion(version)


# PNGs larger than this stay a path only (metadata lives in the instance's event log).
MAX_INLINE_BYTES = 2_000_000


def image_md(path: str | Path, alt: str) -> dg.MetadataValue:
    """A PNG as Markdown with the image inline (a data: URI), which the Dagster UI renders."""
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    if not data:
        return dg.MetadataValue.md(f"*{alt}: {path} is missing*")
    if len(data) > MAX_INLINE_BYTES:
        return dg.MetadataValue.md(f"*{alt}: {path} is {len(data) // 1000} kB, too large to show inline*")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})")
