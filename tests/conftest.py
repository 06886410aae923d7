"""Root fixtures (helpers live in agedistill_testing.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from agedistill_testing import UTKFACE, write_params


@pytest.fixture
def utk_params(tmp_path: Path) -> Path:
    """A profile over 300 real UTKFace faces (fixed-seed sample), one short epoch."""
    return write_params(tmp_path, {"utk": {
        "workdir": str(tmp_path / "work"),
        "shard_size": 128,
        "dataset": {"name": "utkface", "root": str(UTKFACE), "limit": 300},
        "faces": {"detector": "none", "crop_size": 112},
        "students": {"archs": ["mn3_small"], "epochs": 1, "batch_size": 32, "augment": True},
        "corruptions": {"names": ["defocus_blur", "jpeg"], "severities": [1, 5], "max_faces": 40},
    }})


# -- pytest-xdist (`make test` runs `-n 2 --dist loadgroup`) ------------------------------------
# Tests that share a module-, class-, package- or session-scoped fixture of this suite (a
# materialised graph, a running `dagster dev`, a trained reference) run in one worker process, so
# each such fixture is built once; a test file may also name its group with
# `pytest.mark.xdist_group(name)` (the cluster tests do: Redis and Celery workers are heavy).
# Every other test is sent to whichever worker is free.
_SHARED_SCOPES = {"session": 0, "package": 1, "module": 2, "class": 3}


def _shared_group(item) -> tuple[int, str] | None:
    """(rank, group) of ``item``'s coarsest shared fixture defined in this suite, if any."""
    info = getattr(item, "_fixtureinfo", None)
    best = None
    for name, defs in (info.name2fixturedefs.items() if info is not None else ()):
        fixture = defs[-1]
        rank = _SHARED_SCOPES.get(fixture.scope)
        if rank is None or not fixture.baseid:          # function scope, or a plugin's fixture
            continue
        group = item.nodeid.split("::", 1)[0] if fixture.scope in ("module", "class") else f"{fixture.baseid}::{name}"
        if best is None or rank < best[0]:
            best = (rank, group)
    return best


def pytest_collection_modifyitems(config, items):
    """Every test of a module that shares a fixture goes to the coarsest group any of them needs."""
    by_module: dict[str, tuple[int, str]] = {}
    for item in items:
        found = _shared_group(item)
        module = item.nodeid.split("::", 1)[0]
        if found is not None and (module not in by_module or found[0] < by_module[module][0]):
            by_module[module] = found
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if module in by_module and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(by_module[module][1]))
