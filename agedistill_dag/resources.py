"""The one resource: which params.yaml profile the assets run with.

``build_definitions`` binds it to the profile the definitions were built for; a run
that points it at another profile is refused (``Profile.run_settings``), since the
asset keys and partitions are that profile's own."""
from __future__ import annotations

from typing import Optional

import dagster as dg

from agedistill_core.settings import Settings, load_settings


class AgedistillConfig(dg.ConfigurableResource):
    """Selects the profile of ``params.yaml`` (default: $AGEDISTILL_PROFILE or its default_profile)."""

    profile: Optional[str] = None
    params: Optional[str] = None

    def settings(self) -> Settings:
        return load_settings(self.profile, self.params)
