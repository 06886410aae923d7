"""params.yaml: data sets, recipes and profiles merged into one validated Settings; param_sources exact."""
from __future__ import annotations

import copy
import shutil
from dataclasses import asdict

import pytest
import yaml

from agedistill_core.settings import params as settings_mod  # load_settings reads params.yaml through it
from agedistill_core.errors import ConfigError
from agedistill_core.settings import SECTIONS, TOP_LEVEL, load_settings, param_sources
from agedistill_testing import REPO, write_params

PARAMS = REPO / "params.yaml"
KEYS = [*SECTIONS, *sorted(TOP_LEVEL)]
HASHED = [*SECTIONS, *sorted(TOP_LEVEL - {"workdir"})]

# Every profile's settings hash and workdir (last changed on purpose when students.max_age was added, with
# the children-member profiles corpus_child_s0/_s1/_s2 and fairface_children; run folders keep their names:
# the recipe hash counts max_age only when it is set).
# To re-pin: print `"name": (s.section_hash(*HASHED), workdir)` for every profile of params.yaml.  Run names, stage versions
# and Dagster's data versions derive from these: a change makes that profile's existing results
# stale.  If you change a profile on purpose, update its line.
EXPECTED = {
    "corpus": ("47d16067a7f1", "data/corpus"),
    "corpus_band": ("7ecaff97e012", "data/corpus"),
    "corpus_big": ("ec8992f2def1", "data/corpus"),
    "corpus_cap_large": ("9c27c8aa66de", "data/corpus"),
    "corpus_cap_large_c": ("cc551c9d605b", "data/corpus"),
    "corpus_cap_large_next": ("78d1715b30c1", "data/corpus"),
    "corpus_cap_small": ("01304ff34b78", "data/corpus"),
    "corpus_cap_small_c": ("65ac75ee3e81", "data/corpus"),
    "corpus_cap_small_s1": ("0750a497471c", "data/corpus"),
    "corpus_child_s0": ("1015a6e27d33", "data/corpus"),
    "corpus_child_s1": ("a50e4a895bc4", "data/corpus"),
    "corpus_child_s2": ("9369ede51bcb", "data/corpus"),
    "corpus_ft": ("f97cd5879f27", "data/corpus"),
    "corpus_ft_s1": ("196532e1d629", "data/corpus"),
    "corpus_gt": ("d4212af9cac8", "data/corpus"),
    "corpus_gt_band": ("621f3e35f905", "data/corpus"),
    "corpus_gt_s1": ("3b6a2dc0cb6e", "data/corpus"),
    "corpus_large": ("4e6539f69bb8", "data/corpus"),
    "corpus_s1": ("2ec42d2ddb00", "data/corpus"),
    "corpus_warm112": ("6b75f2630684", "data/corpus"),
    "corpus_warm112_s1": ("785d28c21f95", "data/corpus"),
    "corpus_warm96": ("2693ad81a067", "data/corpus"),
    "corpus_warm96_cont": ("b0122e65672f", "data/corpus"),
    "corpus_warm96_cont_s1": ("2d7c1305b92d", "data/corpus"),
    "corpus_warm96_til": ("d366aa4c9ee4", "data/corpus"),
    "corpus_paper16": ("dea87e9da4cc", "data/corpus"),
    "corpus_paper16_s1": ("e1251f13ad46", "data/corpus"),
    "corpus_dist16": ("99c0e14e335d", "data/corpus"),
    "corpus_dist16_s1": ("813960bbb75c", "data/corpus"),
    "corpus_distc": ("840e7a24cdc2", "data/corpus"),
    "corpus_distc_s1": ("9f04cc24d41a", "data/corpus"),
    "corpus_distb": ("9eb9ab556671", "data/corpus"),
    "corpus_distb_s1": ("79951edace64", "data/corpus"),
    "corpus_distg": ("821260a79e70", "data/corpus"),
    "corpus_distg_s1": ("39219923e8bf", "data/corpus"),
    "corpus_distg1": ("b3971bf7f2dd", "data/corpus"),
    "corpus_distg1_s1": ("90941da830cf", "data/corpus"),
    "corpus_distga": ("c0c540001a09", "data/corpus"),
    "corpus_distga_s1": ("2cdee210635a", "data/corpus"),
    "corpus_distgl": ("251f37ba9d29", "data/corpus"),
    "corpus_distgac": ("bbb78ae5b648", "data/corpus"),
    "corpus_distgac_s1": ("9ee1e55d455e", "data/corpus"),
    "corpus_noise": ("4d3136ebe564", "data/corpus"),
    "corpus_noise_s1": ("d52bf487e4d6", "data/corpus"),
    "corpus_noiseocc": ("626ac3449cb6", "data/corpus"),
    "corpus_distn": ("5501f5214e06", "data/corpus"),
    "corpus_gt14": ("acdd9072ba62", "data/corpus"),
    "corpus_gt14_s1": ("c4562ed2dc8c", "data/corpus"),
    "corpus_gt14_long": ("b75025bd3ef6", "data/corpus"),
    "corpus_gtc": ("cbc1b8b84b0c", "data/corpus"),
    "corpus_gtc_s1": ("015c0cd853f4", "data/corpus"),
    "corpus_wild": ("905eb0612781", "data/corpus"),
    "corpus_wild_s1": ("90216a45e01c", "data/corpus"),
    "corpus_tame": ("02d86ca81aa2", "data/corpus"),
    "demo": ("163d8d8a207e", "data/demo"),
    "fairface": ("2872a35b3823", "data/fairface"),
    "fairface_children": ("94885b4d4f8e", "data/fairface_children"),
    "fairface_groups": ("37dc07b029a1", "data/fairface"),
    "fairface_ordinal": ("6244e3a3cbe8", "data/fairface"),
    "folder": ("5b8c29069357", "data/folder"),
    "utkface": ("d412a5164bd4", "data/utkface"),
    "utkface_large_short": ("090395222257", "data/utkface"),
    "utkface_long": ("35b927c3a335", "data/utkface"),
    "utkface_long_gt": ("d492b69b070a", "data/utkface"),
    "utkface_quick": ("a289fdb787af", "data/utkface_quick"),
    "utkface_robust": ("9aeebd77e6e1", "data/utkface"),
    "utkface_short": ("2b4c91b31e3d", "data/utkface"),
    "utkface_short_gt": ("0b470f72b9ba", "data/utkface"),
    "utkface_short_gt10": ("3f28a77f87e6", "data/utkface"),
    "utkface_short_gt10_ft": ("9a0f903d1bd6", "data/utkface"),
    "utkface_short_gt10_steps": ("5f4fe7509f83", "data/utkface"),
}


def _repo() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def test_every_profile_keeps_its_settings_hash_and_workdir():
    raw = _repo()
    assert set(raw["profiles"]) == set(EXPECTED)
    for name, (digest, workdir) in EXPECTED.items():
        s = load_settings(name, PARAMS)
        assert (s.section_hash(*HASHED), s.workdir) == (digest, REPO / workdir), name


def test_repo_profiles_merge_base_dataset_recipe_then_profile():
    demo, utk = load_settings("demo", PARAMS), load_settings("utkface", PARAMS)
    assert demo.students.epochs == 3 and utk.students.epochs == 70   # recipes smoke / spec
    assert demo.faces.margin == utk.faces.margin == 0.2              # base kept
    assert demo.workdir == REPO / "data" / "demo" and demo.shard_size == 64
    assert utk.data_root.resolve() == (REPO / "../shared/data/utkface/crop_part1").resolve()
    gt = load_settings("utkface_short_gt10_ft", PARAMS)              # recipe short + the profile's own
    assert (gt.students.epochs, gt.students.tag, gt.students.lr, gt.students.max_train_faces) == (6, "short", 0.0005, 626)
    assert gt.faces.detector == "none" and gt.workdir == utk.workdir  # the data set's framing and workdir
    corpus = load_settings("corpus_gt", PARAMS)
    assert [s.id for s in corpus.sources] == ["utkface", "utkface_rest", "lfw", "celeba"]
    assert corpus.source("celeba").faces.align == "dlib5" and corpus.source("lfw").faces.detector == "ssd"
    assert corpus.source("lfw").split.test == 0.0 and corpus.students.sources == ("utkface",)


def test_params_yaml_names_each_data_set_and_recipe_once():
    text = PARAMS.read_text()
    assert text.count("root: ../shared/data/utkface/crop_part1") == 2   # the utkface data set and the corpus' source
    assert "&" not in text.split("profiles:")[-1] and "*" not in text.split("profiles:")[-1]  # no YAML anchors
    raw = _repo()
    for name, profile in raw["profiles"].items():
        assert isinstance(profile.get("dataset"), str) and profile["dataset"] in raw["datasets"], name
        assert isinstance(profile.get("recipe"), str) and profile["recipe"] in raw["recipes"], name
    used = {p["recipe"] for p in raw["profiles"].values()}
    assert used == set(raw["recipes"])                                 # no dead recipe


def test_section_hash_tracks_only_its_sections(tmp_path):
    p = write_params(tmp_path, {"a": {"students": {"epochs": 2}}, "b": {"students": {"epochs": 5}}})
    a, b = load_settings("a", p), load_settings("b", p)
    assert a.section_hash("faces", "teacher") == b.section_hash("faces", "teacher")
    assert a.section_hash("students") != b.section_hash("students")


def test_numbers_keep_their_yaml_type(tmp_path):
    """12 stays 12 and 0.5 stays 0.5 (section hashes of existing runs depend on it); 3.0 counts as 3."""
    p = write_params(tmp_path, {"p": {"teacher": {"children_gate": 12}, "students": {"epochs": 3.0, "lr": 1}}})
    s = load_settings("p", p)
    assert type(s.teacher.children_gate) is int and type(s.students.lr) is int
    assert s.students.epochs == 3 and type(s.students.epochs) is int
    assert s.students.archs == ("mn3_small",) and isinstance(s.teacher.members, tuple)


# -- param_sources: exactly the params.yaml keys a profile's setting is merged from ---------------

def _get(tree, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _unset_field(raw: dict, section: str) -> str:
    """A field of ``section`` no layer after ``base`` sets: a change of it is never shadowed."""
    layers = [*(raw.get("datasets") or {}).values(), *(raw.get("recipes") or {}).values(), *raw["profiles"].values()]
    used = {k for layer in layers if isinstance((layer or {}).get(section), dict) for k in layer[section]}
    return next(f for f in sorted(SECTIONS[section].__dataclass_fields__)
                if f not in used and f not in ("sources", "name", "root", "members", "archs", "severities"))


PROBE_VALUES = {"limit": 7, "test": 0.15, "val": 0.15, "batch_size": 7, "variants": 1, "children_gate": 9,
                "evaluate": 7, "max_faces": 7, "seed": 777, "weight_decay": 0.00123, "jpeg_quality": 91,
                "align_padding": 0.31, "workers": 3, "base_split": "val", "augment": False, "threads": 3,
                "channels_last": False}


def _probe(section: str, raw: dict):
    """(field, value): a change of ``section`` no other layer undoes."""
    if section in TOP_LEVEL:
        return None, {"seed": 12345, "shard_size": 777, "workdir": "data/probe"}[section]
    name = _unset_field(raw, section)
    return name, PROBE_VALUES[name]


def _mutate(raw: dict, dotted: str, section: str) -> dict:
    """``raw`` with the value at ``dotted`` changed so that ``section`` (were it merged from there) changes."""
    out = copy.deepcopy(raw)
    parts = dotted.split(".")
    parent = _get(out, ".".join(parts[:-1]))
    field, value = _probe(section, raw)
    if parts[0] == "profiles" and parts[-1] in ("dataset", "recipe") and isinstance(parent[parts[-1]], str):
        group = "datasets" if parts[-1] == "dataset" else "recipes"    # a reference: point it at a changed copy
        entry = copy.deepcopy(out[group][parent[parts[-1]]] or {})
        entry[section] = value if field is None else {**(entry.get(section) or {}), field: value}
        out[group]["probe_copy"] = entry
        parent[parts[-1]] = "probe_copy"
    else:
        parent[parts[-1]] = value if field is None else {**parent[parts[-1]], field: value}
    return out


def _existing_keys(raw: dict) -> set[str]:
    """Every dotted key of the file that could feed a setting (sections, top-level keys, references)."""
    keys = set()
    layers = [("base", raw.get("base") or {})]
    layers += [(f"datasets.{n}", d or {}) for n, d in (raw.get("datasets") or {}).items()]
    layers += [(f"recipes.{n}", r or {}) for n, r in (raw.get("recipes") or {}).items()]
    layers += [(f"profiles.{n}", p or {}) for n, p in raw["profiles"].items()]
    for prefix, layer in layers:
        keys |= {f"{prefix}.{k}" for k in layer if k in KEYS or k == "recipe"}
    return keys


def _is_ref(raw: dict, dotted: str) -> bool:
    return dotted.startswith("profiles.") and dotted.endswith((".dataset", ".recipe")) \
        and isinstance(_get(raw, dotted), str)


def _shadowed(raw: dict, dotted: str, listed: list[str]) -> bool:
    """Whether a later key of ``listed`` sets the top-level value ``dotted`` (or the layer it names) sets."""
    group = ("datasets." if dotted.endswith(".dataset") else "recipes.") if _is_ref(raw, dotted) else None
    later = listed[listed.index(dotted) + 1:]
    return any(not _is_ref(raw, k) and not (group and k.startswith(group)) for k in later)


def _values(s) -> dict:
    return {k: (asdict(getattr(s, k)) if k in SECTIONS else getattr(s, k)) for k in KEYS}


def test_param_sources_lists_exactly_the_keys_each_setting_is_merged_from(tmp_path, monkeypatch):
    """For every profile and setting: each listed key exists, changing it changes the setting, and
    changing any other key of the file (other profiles, data sets, recipes) leaves it alone."""
    raw = _repo()
    path = tmp_path / "params.yaml"
    shutil.copy(PARAMS, path)          # relative roots as in the repo; the file itself is read once
    profiles = sorted(raw["profiles"])
    sources = {p: param_sources(p, path) for p in profiles}
    baseline = {p: _values(load_settings(p, path)) for p in profiles}
    for p in profiles:
        assert set(sources[p]) == set(KEYS)
        for key, listed in sources[p].items():
            assert len(listed) == len(set(listed)), (p, key, listed)
            for dotted in listed:
                _get(raw, dotted)                           # exists
    doc = {"raw": raw}
    monkeypatch.setattr(settings_mod, "load_raw", lambda _path: copy.deepcopy(doc["raw"]))
    checked = 0
    for dotted in sorted(_existing_keys(raw)):
        last, value = dotted.split(".")[-1], _get(raw, dotted)
        if dotted.startswith("profiles.") and last in ("dataset", "recipe") and isinstance(value, str):
            targets = settings_mod.DATASET_KEYS if last == "dataset" else settings_mod.RECIPE_KEYS
        else:
            targets = (last,)
        for target in targets:
            doc["raw"] = _mutate(raw, dotted, target)
            for p in profiles:
                now = _values(load_settings(p, path))
                for key in KEYS:
                    listed = dotted in sources[p][key]
                    shadowed = key in TOP_LEVEL and listed and _shadowed(raw, dotted, sources[p][key])
                    expect = key == target and listed and not shadowed
                    assert (now[key] != baseline[p][key]) == expect, (dotted, target, p, key, sources[p][key])
                    checked += expect
    assert checked > 300


def test_param_sources_order_and_references():
    src = param_sources("corpus_s1", PARAMS)
    assert src["faces"] == ["base.faces", "profiles.corpus_s1.dataset", "datasets.corpus.faces"]
    assert src["students"] == ["base.students", "profiles.corpus_s1.recipe", "recipes.corpus20.students",
                               "profiles.corpus_s1.students"]
    assert src["teacher"] == ["base.teacher"]
    assert src["workdir"] == ["profiles.corpus_s1.dataset", "datasets.corpus.workdir"]
    assert param_sources("utkface_quick", PARAMS)["workdir"] == [
        "profiles.utkface_quick.dataset", "datasets.utkface.workdir", "profiles.utkface_quick.workdir"]


def test_inline_profiles_without_data_sets_or_recipes_still_load(tmp_path):
    p = write_params(tmp_path, {"old": {"dataset": {"name": "folder", "root": "x"}, "students": {"epochs": 4}}})
    s = load_settings("old", p)
    assert (s.dataset.name, s.students.epochs, s.workdir) == ("folder", 4, tmp_path / "data" / "old")
    assert param_sources("old", p)["dataset"] == ["profiles.old.dataset"]


# -- one-line errors: the profile, the key, where in params.yaml, the fix -------------------------

def _write(tmp_path, edit) -> object:
    raw = _repo()
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _set(dotted: str, value):
    def edit(raw):
        parts = dotted.split(".")
        tree = raw
        for part in parts[:-1]:
            tree = tree[int(part)] if part.isdigit() else tree[part]
        tree[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return edit


@pytest.mark.parametrize("profile, dotted, value, message", [
    ("utkface_short", "recipes.short.students.weighting", "agreemnt",
     "utkface_short.students.weighting: 'agreemnt' is not one of none, agreement; "
     "fix it in params.yaml (recipes.short.students.weighting)"),
    ("utkface_short", "recipes.short.students.epochz", 3,
     "utkface_short.students: unknown key(s) epochz; valid keys: archs, augment,"),
    ("utkface_short", "recipes.short.students.epochs", "many",
     "utkface_short.students.epochs: must be a whole number, got 'many'; fix it in params.yaml (recipes.short"),
    ("corpus", "recipes.corpus20.students.momentum", 1.5, "corpus.students.momentum: must be < 1, got 1.5"),
    ("utkface", "datasets.utkface.faces.margin", 3,
     "utkface.faces.margin: must be <= 1, got 3; fix it in params.yaml (datasets.utkface.faces.margin)"),
    ("demo", "base.teacher.members", [], "demo.teacher.members: must list at least 1, got []"),
    ("demo", "profiles.demo.wrkdir", "x", "demo: unknown key(s) wrkdir; valid: "),
    ("demo", "base.students.augment", "yes", "demo.students.augment: must be true or false, got 'yes'"),
    ("demo", "base.students.weight_decay", float("inf"), "demo.students.weight_decay: must be a finite number"),
    ("demo", "base.students.lr", "fast", "demo.students.lr: must be a number, got 'fast'"),
    ("corpus", "profiles.corpus.recipe", "corpus21",
     "corpus.recipe: 'corpus21' is not a recipe under 'recipes:'; known: converge, corpus20,"),
    ("corpus", "profiles.corpus.dataset", "corpusx",
     "corpus.dataset: 'corpusx' is not a data set under 'datasets:'; known: corpus, demo, fairface, folder, utkface;"),
    ("corpus", "datasets.corpus.students", {"epochs": 2},
     "corpus: data set 'corpus' has unknown key(s) students; a data set holds dataset, split, faces"),
    ("corpus", "datasets.corpus.dataset.sources.1.face", {}, "corpus.dataset.sources[1]: unknown key(s) face;"),
    ("corpus", "datasets.corpus.dataset.sources.1.id", "utkface", "source id(s) utkface appear twice"),
    ("corpus", "datasets.corpus.dataset.sources.3.faces", {"detector": "ssdd"},
     "corpus.dataset.sources[3].faces.detector: 'ssdd' is not one of"),
    ("corpus_gt", "profiles.corpus_gt.students.sources", ["utk"],
     "corpus_gt.students.sources: 'utk' is not a source of the data set; choose from: celeba, lfw, utkface,"),
    ("corpus_child_s0", "recipes.teacher_children.students.max_age", -1,
     "corpus_child_s0.students.max_age: must be >= 0, got -1"),
    ("corpus_child_s0", "recipes.teacher_children.students.max_age", "young",
     "corpus_child_s0.students.max_age: must be a number, got 'young'"),
    ("corpus_child_s0", "recipes.teacher_children.students.max_age", 30,
     "corpus_child_s0.students.max_age: is 30, but loss children covers ages 0..12 only; set students.max_age: 12; "
     "fix it in params.yaml (recipes.teacher_children.students.max_age)"),
    ("corpus_child_s0", "recipes.teacher_children.students.label_source", "teacher",
     "corpus_child_s0.students.label_source: must be ground_truth with loss children"),
    ("corpus_distg", "profiles.corpus_distg.students.gt_weight", 1.5,
     "corpus_distg.students.gt_weight: must be <= 1, got 1.5"),
    ("corpus_gt", "profiles.corpus_gt.students.gt_weight", 0.5,
     "corpus_gt.students.gt_weight: is 0.5, but label_source ground_truth learns real ages alone; set gt_weight: 0 "
     "or label_source: teacher"),
    ("corpus_distg", "profiles.corpus_distg.students.teacher_in_loop", True,
     "corpus_distg.students.gt_weight: is 0.5, but teacher_in_loop relabels every view with the teacher alone; "
     "set gt_weight: 0 or teacher_in_loop: false"),
])
def test_bad_settings_are_one_line_naming_profile_key_and_place(tmp_path, profile, dotted, value, message):
    with pytest.raises(ConfigError) as err:
        load_settings(profile, _write(tmp_path, _set(dotted, value)))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_field_hashed_only_when_set_keeps_every_other_profile_current(tmp_path):
    """gt_weight came after results existed: 0 hashes as its absence (the pins above hold), a value does not."""
    plain = load_settings("corpus_distc", PARAMS)
    assert plain.students.gt_weight == 0
    zero = load_settings("corpus_distc", _write(tmp_path, _set("profiles.corpus_distc.students.gt_weight", 0)))
    half = load_settings("corpus_distc", _write(tmp_path, _set("profiles.corpus_distc.students.gt_weight", 0.5)))
    assert zero.section_hash(*HASHED) == plain.section_hash(*HASHED) != half.section_hash(*HASHED)


def test_choices_come_from_the_registries(tmp_path):
    from agedistill_core.datasets import DATASETS
    from agedistill_core.faces import DETECTORS
    from agedistill_core.students.losses import LOSSES
    from agedistill_core.students.zoo import STUDENTS

    for dotted, registry in (("datasets.utkface.faces.detector", DETECTORS), ("recipes.spec.students.loss", LOSSES),
                             ("recipes.spec.students.archs", STUDENTS), ("datasets.utkface.dataset.name", DATASETS)):
        with pytest.raises(ConfigError) as err:
            load_settings("utkface", _write(tmp_path, _set(dotted, "nope")))
        assert f"'nope' is not one of {', '.join(registry.names())};" in str(err.value), dotted


def test_unknown_profile_lists_choices(tmp_path):
    p = write_params(tmp_path, {"one": {}, "two": {}})
    with pytest.raises(ConfigError, match="choose one of: one, two"):
        load_settings("three", p)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings("demo", tmp_path / "nope.yaml")


def test_dvc_set_param_keys_are_plain_params_yaml_keys(tmp_path):
    """`dvc exp run -S KEY=VALUE` edits params.yaml with these keys; the profiles follow."""
    hydra = pytest.importorskip("dvc.utils.hydra", reason="dvc with hydra is not installed")
    path = tmp_path / "params.yaml"
    shutil.copy(PARAMS, path)
    hydra.apply_overrides(path, ["profiles.demo.recipe=short", "recipes.short.students.epochs=5",
                                 "datasets.utkface.faces.detector=ssd", "+profiles.utkface.students.seed=3"])
    demo, utk = load_settings("demo", path), load_settings("utkface", path)
    assert (demo.students.epochs, demo.students.tag) == (5, "short")
    assert (utk.faces.detector, utk.students.seed) == ("ssd", 3)
    assert load_settings("utkface_short", path).students.epochs == 5
