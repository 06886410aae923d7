"""The one resource: which params.yaml profile the assets run with."""
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
