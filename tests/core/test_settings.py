import pytest

from agedistill_core.errors import ConfigError
from agedistill_core.settings import load_settings
from agedistill_testing import REPO, write_params


def test_repo_profiles_load_and_merge_base():
    demo = load_settings("demo", REPO / "params.yaml")
    utk = load_settings("utkface", REPO / "params.yaml")
    assert demo.students.epochs == 3 and utk.students.epochs == 70   # profile overrides base
    assert demo.faces.margin == utk.faces.margin == 0.2              # base kept
    assert demo.workdir == REPO / "data" / "demo"
    assert utk.data_root.resolve() == (REPO / "../shared/data/utkface/crop_part1").resolve()


def test_section_hash_tracks_only_its_sections(tmp_path):
    p = write_params(tmp_path, {"a": {"students": {"epochs": 2}}, "b": {"students": {"epochs": 5}}})
    a, b = load_settings("a", p), load_settings("b", p)
    assert a.section_hash("faces", "teacher") == b.section_hash("faces", "teacher")
    assert a.section_hash("students") != b.section_hash("students")


@pytest.mark.parametrize("profile, message", [
    ({"students": {"epochz": 3}}, "unknown key(s) epochz"),
    ({"students": {"epochs": "many"}}, "students.epochs must be a number"),
    ({"faces": {"margin": 3}}, "faces.margin must be in [0, 1]"),
    ({"teacher": {"members": []}}, "teacher.members must list at least one member"),
    ({"wrkdir": "x"}, "unknown key(s) wrkdir"),
])
def test_bad_config_names_the_key(tmp_path, profile, message):
    p = write_params(tmp_path, {"bad": profile})
    with pytest.raises(ConfigError, match=None) as err:
        load_settings("bad", p)
    assert message in str(err.value)


def test_unknown_profile_lists_choices(tmp_path):
    p = write_params(tmp_path, {"one": {}, "two": {}})
    with pytest.raises(ConfigError, match="choose one of: one, two"):
        load_settings("three", p)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings("demo", tmp_path / "nope.yaml")
