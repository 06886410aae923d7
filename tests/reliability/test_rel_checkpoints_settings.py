"""Bad checkpoints and bad settings values: one line naming the file or key and the fix, never a traceback."""
from __future__ import annotations

import pickle
import warnings

import pytest
import torch

from agedistill_core.cli import main
from agedistill_core.errors import CheckpointError, ConfigError
from agedistill_core.students.inference import load_student
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
