"""dvc.yaml, generated from the stage table (``agedistill_core.pipeline.STAGES``).

One DVC stage per pipeline stage, for one profile (params.yaml's ``dvc.profile``):

* ``cmd``: the CLI's stage subcommand for that profile;
* ``deps``: the outputs of the stages it ``needs``, and its code;
* ``params``: every params.yaml key whose value is merged into a settings section the
  stage reads (``settings.param_sources``), so a change in ``base.faces`` or in the
  profile's own ``faces`` both make ``crops`` stale, exactly as Dagster sees it;
* ``outs`` / ``metrics`` / ``plots``: the stage's outputs, under the profile's workdir
  (wherever ``workdir`` puts it).
Training curves (each student run's ``metrics.csv``) are DVC plots.

``agedistill dvc-yaml`` rewrites the file; ``agedistill dvc-yaml --check`` (and a test)
fails when the committed file differs from what the table and params.yaml give.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from agedistill_core.errors import ConfigError
from agedistill_core.pipeline import STAGE, STAGES
from agedistill_core.settings import Settings, load_raw, load_settings, param_sources
from agedistill_core.shards import atomic_write_text
from agedistill_core.students.train import run_dir

HEADER = """\
# GENERATED from the stage table (agedistill_core/pipeline.py STAGES) and params.yaml: do not edit.
# Rewrite with `agedistill dvc-yaml` (`make repro` does it first); a test fails when it is stale.
# Profile: {profile} (params.yaml `dvc.profile`); every output lives in {workdir}/.
# Shard folders persist between runs: a stage only (re)computes the shards whose inputs or
# settings changed, so adding images is incremental.
"""


def dvc_profile(params: str | os.PathLike | None = None) -> str:
    """The profile dvc.yaml is generated for: params.yaml's ``dvc.profile`` (else its default_profile)."""
    from agedistill_core.settings import find_params
    path = find_params(params)
    raw = load_raw(path)
    dvc = raw.get("dvc")
    if dvc is not None and not isinstance(dvc, dict):
        raise ConfigError(f"{path}: 'dvc' must be a mapping like `dvc: {{profile: demo}}`, got "
                          f"{type(dvc).__name__} {str(dvc)[:60]}; fix it in {path.name} (dvc)")
    name = (dvc or {}).get("profile") or raw.get("default_profile")
    if not name:
        raise ConfigError("params.yaml has no dvc.profile (the profile `dvc repro` runs); add `dvc: {profile: demo}`")
    if not isinstance(name, str):
        raise ConfigError(f"{path}: dvc.profile must be a profile name, got {name!r}; fix it in {path.name} (dvc.profile)")
    return name


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()


def _item(path: str, persist: bool = False) -> list[str]:
    # every output is cached (none is kept in git: data/ is ignored), so `dvc push` / `pull` carry all of them
    return [f"      - {path}:", "          persist: true"] if persist else [f"      - {path}"]


def _data_roots(settings: Settings, root: Path) -> tuple[list[str], list[str]]:
    """The sources' data roots as (deps, outs): a root is a dependency (so `dvc status` sees an added
    or replaced image), except one its adapter writes itself (the demo's), which is an output of
    the stage that writes it (a dependency must exist before the stage runs)."""
    from agedistill_core.datasets import DATASETS

    deps, outs = [], []
    for src in settings.sources:
        writes = getattr(DATASETS.get(src.name), "creates_root", False)
        (outs if writes else deps).append(_rel(src.root, root))
    return list(dict.fromkeys(deps)), list(dict.fromkeys(outs))


def render(settings: Settings) -> str:
    """dvc.yaml's text for ``settings``' profile."""
    root = settings.params_path.parent
    work = _rel(settings.workdir, root)
    sources = param_sources(settings.profile, settings.params_path)
    lines = [HEADER.format(profile=settings.profile, workdir=work), "stages:"]
    for st in STAGES:
        lines.append(f"  {st.name}:")
        lines.append(f"    cmd: agedistill --profile {settings.profile} {st.name}")
        deps = [f"{work}/{o.path}" for need in st.needs for o in STAGE[need].outs if o.kind == "out"]
        deps += list(st.code)
        deps += [_rel(path, root) for path in st.extra_inputs(settings)]
        roots, written = _data_roots(settings, root) if st.data_roots else ([], [])
        deps += roots
        lines.append("    deps:")
        lines += [f"      - {d}" for d in dict.fromkeys(deps)]
        params = [key for section in st.settings for key in sources[section]]
        if params:
            lines.append("    params:")
            lines += [f"      - {k}" for k in dict.fromkeys(params)]
        for kind, title in (("out", "outs"), ("metric", "metrics"), ("plot", "plots")):
            outs = [o for o in st.outs if o.kind == kind]
            if outs or (kind == "out" and written):
                lines.append(f"    {title}:")
                for path in written if kind == "out" else []:
                    lines += _item(path, persist=True)
                for o in outs:
                    lines += _item(f"{work}/{o.path}", o.persist)
        lines.append("")
    curves = [f"{_rel(run_dir(settings, arch), root)}/metrics.csv" for arch in settings.students.archs]
    lines.append("# Training curves of each student run (`dvc plots show`, `dvc plots diff` across experiments).")
    lines.append("plots:")
    for path in curves:
        lines += [f"  - {path}:", "      x: epoch", "      y: [train_mae, val_mae]", "      title: MAE per epoch"]
    return "\n".join(lines) + "\n"


def write_dvc_yaml(settings: Settings | None = None, *, out: str | os.PathLike | None = None,
                   check: bool = False, params: str | os.PathLike | None = None) -> int:
    """Write (or with ``check`` compare) dvc.yaml; returns an exit status (0 ok, 2 stale)."""
    if settings is None:
        settings = load_settings(dvc_profile(params), params)
    target = Path(out) if out else settings.params_path.parent / "dvc.yaml"
    text = render(settings)
    if check:
        if not target.is_file() or target.read_text() != text:
            print(f"error: {target} differs from the stage table for profile {settings.profile!r}; "
                  f"run `agedistill dvc-yaml`", file=sys.stderr)
            return 2
        print(f"{target} matches the stage table (profile {settings.profile})")
        return 0
    atomic_write_text(target, text)
    print(f"wrote {target} (profile {settings.profile}, {len(STAGES)} stages)")
    return 0
