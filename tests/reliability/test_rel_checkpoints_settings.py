"""Bad checkpoints and bad settings values: one line naming the file or key and the fix, never a traceback."""
from __future__ import annotations

import pickle
import warnings

import pytest
import torch

from agedistill_core.cli import main
from agedistill_core.errors import CheckpointError, ConfigError
from agedistill_core.inference.student import load_student
from agedistill_core.settings import load_settings
from agedistill_core.students.checkpoint import save_checkpoint
from agedistill_core.students.zoo import create_student
from agedistill_testing import write_params

CONFIG = {"arch": "mn3_small", "timm": "mobilenetv3_small_100", "input_size": 96, "n_outputs": 1,
          "students": {"loss": "paper"}}


def _model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_student("mn3_small", 1)


def test_nan_weights_are_refused_with_the_cause(tmp_path):
    model = _model()
    with torch.no_grad():
        model.get_classifier().weight.fill_(float("nan"))
    path = save_checkpoint(tmp_path / "best.pt", model=model, epoch=0, best_val=1.0, config=CONFIG)
    with pytest.raises(CheckpointError, match="NaN or infinite weights.*diverged") as exc:
        load_student(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_weights_of_another_arch_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "best.pt", model=_model(), epoch=0, best_val=1.0,
                           config={**CONFIG, "arch": "mn3_large", "timm": "mobilenetv3_large_100"})
    with pytest.raises(CheckpointError, match="do not fit that network") as exc:
        load_student(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


class _Evil:
    def __reduce__(self):
        return (print, ("owned",))


def test_hostile_pickle_is_refused_in_one_full_sentence(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "agedistill-student-checkpoint", "payload": _Evil()}, path)
    rc = main(["predict", str(tmp_path), "--checkpoint", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "owned" not in err[0]
    assert "refused" in err[0] and "could run code" in err[0] and err[0].endswith(")")


def test_garbage_checkpoint_message_is_one_line(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"PK\x03\x04" + pickle.dumps(list(range(50))) * 3)
    with pytest.raises(CheckpointError, match="truncated or corrupt") as exc:
        load_student(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


@pytest.mark.parametrize("students, key", [
    ({"lr": "fast"}, "students.lr"),
    ({"lr": -0.1}, "students.lr"),
    ({"batch_size": 0}, "students.batch_size"),
    ({"threads": -4}, "students.threads"),
    ({"momentum": 1.5}, "students.momentum"),
    ({"weighting": "agreemnt"}, "students.weighting"),
    ({"balance": "bands"}, "students.balance"),
    ({"patience": 0}, "students.patience"),
    ({"seed": 1.5}, "students.seed"),
])
def test_bad_student_values_name_the_key(tmp_path, students, key):
    params = write_params(tmp_path, {"p": {"dataset": {"name": "folder", "root": "x"}, "students": students}})
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as exc:
        load_settings("p", params)
    assert "\n" not in str(exc.value)


def test_split_shares_that_leave_no_training_faces_are_refused(tmp_path):
    params = write_params(tmp_path, {"p": {"dataset": {"name": "folder", "root": "x"},
                                           "split": {"test": 0.99, "val": 0.99}}})
    with pytest.raises(ConfigError, match="for training"):
        load_settings("p", params)


def test_min_face_is_validated(tmp_path):
    params = write_params(tmp_path, {"p": {"dataset": {"name": "folder", "root": "x"}, "faces": {"min_face": -1}}})
    with pytest.raises(ConfigError, match=r"faces\.min_face"):
        load_settings("p", params)


def _layered_params(tmp_path, edit):
    """The repo's params.yaml (data sets, recipes, profiles) with one edit, written to tmp_path."""
    import yaml

    from agedistill_testing import REPO

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("profile, edit, expected", [
    ("utkface_short", lambda r: r["recipes"]["short"]["students"].update(lr=-0.1),
     "utkface_short.students.lr: must be > 0, got -0.1; fix it in params.yaml (recipes.short.students.lr)"),
    ("utkface_short", lambda r: r["recipes"]["short"]["students"].update(epochs=True),
     "utkface_short.students.epochs: must be a whole number, got True"),
    ("corpus_s1", lambda r: r["profiles"]["corpus_s1"].update(recipe="corpus_20"),
     "corpus_s1.recipe: 'corpus_20' is not a recipe under 'recipes:'; known: converge, corpus20, corpus_finetune"),
    ("utkface", lambda r: r["profiles"]["utkface"].update(dataset="utk"),
     "utkface.dataset: 'utk' is not a data set under 'datasets:'; known: corpus, demo, fairface, folder, utkface"),
    ("utkface", lambda r: r["recipes"]["spec"].update(faces={"detector": "ssd"}),
     "utkface: recipe 'spec' has unknown key(s) faces; a recipe holds students, evaluate, corruptions"),
    ("demo", lambda r: r["datasets"]["demo"]["dataset"].update(nmae="demo"),
     "demo.dataset: unknown key(s) nmae; valid keys: limit, name, root, sources; "
     "fix it in params.yaml (datasets.demo.dataset.nmae)"),
])
def test_cli_refuses_bad_layered_settings_in_one_line(tmp_path, capsys, profile, edit, expected):
    params = _layered_params(tmp_path, edit)
    rc = main(["--profile", profile, "--params", str(params), "manifest"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
