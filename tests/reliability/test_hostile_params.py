"""Hostile params.yaml (issue 17, defects 1, 2, 3, 10, 12 and the --params DIR case): each is
refused at start-up in one line that names the profile or key and the fix, never a traceback,
and nothing is written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agedistill_core.dvcyaml import dvc_profile
from agedistill_core.errors import ConfigError
from agedistill_core.settings import load_settings
from agedistill_testing import REPO, write_params

CLI = REPO / ".venv" / "bin" / "agedistill"


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    exe = [str(CLI)] if CLI.is_file() else [sys.executable, "-m", "agedistill_core.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGEDISTILL_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([*exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def refused(params: Path, profile: str | None, *expected: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(profile, params)
    text = str(err.value)
    assert "\n" not in text
    for part in expected:
        assert part in text, text
    return text


def _raw(tmp_path: Path, doc: dict, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- defect 1: tracebacks -> one line -------------------------------------------------------------

def test_unknown_profile_with_a_numeric_profile_key(tmp_path):
    params = _raw(tmp_path, {"profiles": {123: {}, "demo": {}}})
    refused(params, "nope", "unknown profile 'nope'; choose one of: 123, demo")
    refused(params, "123", "profile key 123 is a number, not a name", "rename it")
    # the same mix in data sets and recipes
    params = _raw(tmp_path, {"datasets": {1: {}, "a": {}}, "profiles": {"p": {"dataset": "b"}}})
    refused(params, "p", "'b' is not a data set under 'datasets:'; known: 1, a")


def test_default_profile_that_is_not_a_name(tmp_path):
    params = _raw(tmp_path, {"default_profile": ["demo"], "profiles": {"demo": {}}})
    refused(params, None, "default_profile must be a profile name, got ['demo']; choose one of: demo")


def test_params_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("profiles:\n  caf\u00e9: {}\n".encode("latin-1"))
    refused(path, "x", f"{path} is not UTF-8 text (byte 0xe9 at offset 15); save it as UTF-8")


def test_dvc_section_that_is_not_a_mapping(tmp_path):
    params = _raw(tmp_path, {"dvc": ["demo"], "profiles": {"demo": {}}})
    with pytest.raises(ConfigError, match=r"'dvc' must be a mapping like `dvc: \{profile: demo\}`, got list"):
        dvc_profile(params)
    params = _raw(tmp_path, {"dvc": {"profile": ["demo"]}, "profiles": {"demo": {}}})
    with pytest.raises(ConfigError, match="dvc.profile must be a profile name, got"):
        dvc_profile(params)


def test_cli_one_line_for_numeric_profile_key_dvc_list_and_params_dir(tmp_path):
    params = _raw(tmp_path, {"dvc": ["demo"], "profiles": {123: {}, "demo": {}}})
    assert "choose one of: 123, demo" in one_line(cli("--params", str(params), "--profile", "nope", "manifest"))
    assert "'dvc' must be a mapping" in one_line(cli("--params", str(params), "dvc-yaml"))
    line = one_line(cli("--params", str(tmp_path), "manifest"))
    assert f"params file {tmp_path} is a directory" in line and "not found" not in line


def test_params_directory_is_named_as_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; pass the file itself"):
        load_settings("demo", tmp_path)


# -- defect 2: huge values ------------------------------------------------------------------------

@pytest.mark.parametrize("section, key, value, message", [
    ("faces", "crop_size", 100000, "p.faces.crop_size: must be <= 1024, got 100000; fix it in params.yaml "
                                   "(profiles.p.faces.crop_size)"),
    (None, "seed", 2**70, "p.seed: must be < 2**32 (seeds are 32-bit), got 1180591620717411303424; "
                          "fix it in params.yaml (profiles.p.seed)"),
    ("students", "seed", 2**32, "p.students.seed: must be < 2**32"),
    ("corruptions", "seed", 2**64, "p.corruptions.seed: must be < 2**32"),
    ("students", "seed", -1, "p.students.seed: must be >= 0"),
])
def test_huge_values_are_refused_at_validation(tmp_path, section, key, value, message):
    profile = {key: value} if section is None else {section: {key: value}}
    refused(write_params(tmp_path, {"p": profile}), "p", message)


def test_largest_valid_values_load(tmp_path):
    s = load_settings("p", write_params(tmp_path, {"p": {
        "seed": 2**32 - 1, "faces": {"crop_size": 1024}, "students": {"seed": 2**32 - 1},
        "corruptions": {"seed": 2**32 - 1}}}))
    assert (s.seed, s.faces.crop_size, s.students.seed, s.corruptions.seed) == (2**32 - 1, 1024, 2**32 - 1, 2**32 - 1)


def test_cli_train_with_a_huge_seed_fails_before_making_a_run_folder(tmp_path):
    work = tmp_path / "work"
    params = write_params(tmp_path, {"p": {"workdir": str(work), "students": {"seed": 2**70}}})
    assert "p.students.seed: must be < 2**32" in one_line(cli("--params", str(params), "--profile", "p", "train"))
    assert not work.exists()


# -- defect 3: profile names ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["my-exp", "my.exp", "..", "../../etc", "a b", "caf\u00e9"])
def test_profile_names_are_letters_digits_and_underscores(tmp_path, name):
    params = write_params(tmp_path, {name: {}, "ok_1": {}})
    refused(params, name, f"profile name {name!r} may hold only letters, digits and _ ([A-Za-z0-9_]+",
            "rename it")
    assert load_settings("ok_1", params).workdir == tmp_path / "data" / "ok_1"     # the others still load


def test_names_that_would_collide_or_leave_data_are_refused_everywhere(tmp_path):
    params = write_params(tmp_path, {"my-exp": {}, "my.exp": {}, "..": {}}, default="..")
    for name in ("my-exp", "my.exp", None):           # None: the file's default_profile
        with pytest.raises(ConfigError, match="may hold only letters, digits and _"):
            load_settings(name, params)
    assert not (tmp_path / "data").exists()


# -- defect 10: a list naming something twice ------------------------------------------------------

@pytest.mark.parametrize("section, key, value, message", [
    ("students", "archs", ["mn3_small", "mn3_small"],
     "p.students.archs: lists 'mn3_small' more than once; name each architecture once; "
     "fix it in params.yaml (profiles.p.students.archs)"),
    ("corruptions", "names", ["jpeg", "jpeg"], "p.corruptions.names: lists 'jpeg' more than once"),
    ("corruptions", "severities", [1, 2, 1], "p.corruptions.severities: lists 1 more than once"),
])
def test_duplicate_entries_are_refused(tmp_path, section, key, value, message):
    refused(write_params(tmp_path, {"p": {section: {key: value}}}), "p", message)


# -- defect 12: workdirs that would write over the file system, the repository or the data ------

def test_workdir_at_the_file_system_root(tmp_path):
    refused(write_params(tmp_path, {"p": {"workdir": "/"}}), "p",
            "p.workdir: / is the file-system root; set workdir to a folder of its own (default data/p); "
            "fix it in params.yaml (profiles.p.workdir)")


@pytest.mark.parametrize("workdir", [".", "..", str(REPO)])
def test_workdir_that_is_or_holds_the_repository(tmp_path, workdir):
    refused(write_params(tmp_path, {"p": {"workdir": workdir}}), "p", "p.workdir: ",
            "the repository", "set workdir to a folder of its own")


@pytest.mark.parametrize("workdir", ["imgs", "imgs/work", "imgs/a/../b"])
def test_workdir_inside_the_data_root(tmp_path, workdir):
    (tmp_path / "imgs").mkdir()
    text = refused(write_params(tmp_path, {"p": {"workdir": workdir,
                                                 "dataset": {"name": "folder", "root": "imgs"}}}), "p",
                   "is inside the data root", "of source 'folder'", "own outputs as photos")
    assert "fix it in params.yaml (profiles.p.workdir)" in text


def test_data_root_inside_the_workdir_is_fine(tmp_path):
    s = load_settings("p", write_params(tmp_path, {"p": {"workdir": "work",
                                                         "dataset": {"name": "folder", "root": "work/raw"}}}))
    assert s.workdir == tmp_path / "work"
