"""One table of stages (``agedistill_core.pipeline.STAGES``): dvc.yaml, the CLI and the Dagster
assets all agree with it."""
from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from agedistill_core import cli
from agedistill_core.dvcyaml import dvc_profile, render, write_dvc_yaml
from agedistill_core.pipeline import STAGE, STAGES, settings_version
from agedistill_core.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_committed_dvc_yaml_is_what_the_table_gives():
    settings = load_settings(dvc_profile(REPO / "params.yaml"), REPO / "params.yaml")
    assert (REPO / "dvc.yaml").read_text() == render(settings), "dvc.yaml is stale: run `agedistill dvc-yaml`"
    assert write_dvc_yaml(settings, out=REPO / "dvc.yaml", check=True) == 0


def test_dvc_stages_follow_the_table():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    profile = dvc_profile(REPO / "params.yaml")
    assert list(dvc) == [s.name for s in STAGES]
    for st in STAGES:
        assert dvc[st.name]["cmd"] == f"agedistill --profile {profile} {st.name}"
        for need in st.needs:  # every upstream output is a dependency
            for out in STAGE[need].outs:
                if out.kind == "out":
                    assert f"data/{profile}/{out.path}" in dvc[st.name]["deps"]


def _params(tmp_path: Path, profile_body: str) -> Path:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    text = textwrap.dedent(f"""\
        default_profile: exp
        dvc: {{profile: exp}}
        base: {yaml.safe_dump(base["base"], default_flow_style=True, width=10_000).strip()}
        profiles:
          exp:
        """) + textwrap.indent(textwrap.dedent(profile_body), "    ")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_a_profile_override_is_a_dvc_param_of_every_stage_that_reads_it(tmp_path):
    """The bug this replaces: dvc.yaml listed base.faces only, so a profile's own faces never made crops stale."""
    params = _params(tmp_path, """\
        dataset: {name: demo, root: data/demo/raw}
        workdir: data/elsewhere
        faces: {detector: none, align: none}
        students: {epochs: 2}
        """)
    dvc = yaml.safe_load(render(load_settings("exp", params)))["stages"]
    for st in STAGES:
        listed = dvc[st.name].get("params", [])
        assert ("profiles.exp.faces" in listed) == ("faces" in st.settings), st.name
        assert ("base.faces" in listed) == ("faces" in st.settings), st.name
        assert ("profiles.exp.students" in listed) == ("students" in st.settings), st.name
        assert all(k.split(".")[0] in ("base", "profiles") for k in listed)
    # the workdir override moves every output
    assert dvc["crops"]["outs"] == [{"data/elsewhere/crops": {"persist": True}}]


def test_cli_has_one_subcommand_per_stage():
    sub = next(a for a in cli._parser()._actions if a.dest == "command")
    assert [s.name for s in STAGES] == [n for n in sub.choices if n in STAGE]
    for st in STAGES:
        flags = {o for a in sub.choices[st.name]._actions for o in a.option_strings} - {"-h", "--help"}
        assert flags == {o.flag for o in st.options} | {"--profile", "--params"}  # the profile after it too


def test_dagster_assets_follow_the_table():
    import dagster as dg

    from agedistill_dag.definitions import build_definitions
    from agedistill_dag.profile import Profile

    p = Profile.load("demo", str(REPO / "params.yaml"))
    defs = build_definitions(p)
    graph = defs.resolve_asset_graph()
    for st in STAGES:
        key = p.key(st.asset)
        node = graph.get(key)
        assert node.group_name == st.group
        assert set(node.parent_keys) == {p.key(STAGE[n].asset) for n in st.needs}, st.name
        assert node.code_version == settings_version(p.settings, st.name)
        assert (node.partitions_def is None) == (st.partitions is None)
        if st.partitions == "shards":
            assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition)
    assert {k for k in graph.get_all_asset_keys()} == {p.key(s.asset) for s in STAGES}


def test_readme_shows_the_stage_table():
    from agedistill_core.pipeline import stages_markdown
    readme = (REPO / "README.md").read_text()
    begin, end = readme.index("<!-- stage-table"), readme.index("<!-- /stage-table -->")
    shown = readme[begin:end].split("\n", 1)[1].strip()
    assert shown == stages_markdown(), "README's stage table is stale: paste agedistill_core.pipeline.stages_markdown()"


def test_every_stage_names_functions_that_exist():
    """``Stage.function`` and ``Stage.version`` are names, imported when used: each resolves."""
    from agedistill_core.pipeline import resolve

    for st in STAGES:
        assert callable(resolve(st.function)) and callable(resolve(st.version)), st.name
        assert st.inputs is None or callable(resolve(st.inputs)), st.name


def test_the_demo_benchmark_depends_on_the_shipped_model_it_scores():
    """The demo's benchmark scores the shipped model beside its own student, so dvc.yaml lists the
    shipped checkpoint as a dependency of ``evaluate`` (a newly shipped model re-runs it); a profile
    whose benchmark does not score it does not depend on it."""
    from agedistill_core.dvcyaml import render
    from agedistill_core.evaluate.benchmark import extra_checkpoints
    from agedistill_core.inference.student import DEFAULT_CHECKPOINT
    from agedistill_core.settings import load_settings

    demo = load_settings("demo", REPO / "params.yaml")
    assert extra_checkpoints(demo) == [DEFAULT_CHECKPOINT]
    evaluate = render(demo).split("\n  evaluate:\n", 1)[1].split("\n\n", 1)[0]
    assert "      - models/mn3_small_distilled/best.pt" in evaluate.splitlines()
    assert extra_checkpoints(load_settings("utkface", REPO / "params.yaml")) == []


def test_the_table_imports_no_stage():
    """Importing the stage table loads no stage's module (they are named, not imported)."""
    import subprocess
    import sys

    code = ("import sys, agedistill_core.pipeline; "
            "print([m for m in sys.modules if m.startswith('agedistill_core.') and m.split('.')[1] in "
            "('stages', 'faces', 'teacher', 'students', 'corruptions', 'evaluate', 'inference', 'datasets')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
