"""Fine-tuning (SPEC 5) through the one training engine, on tiny official-layout folders of real faces:
the group protocol (softmax and ordinal heads, FairFace-style k folds and Adience's own folds), the
apparent-age protocol, framing as the checkpoint records, resume, and the command line."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from agedistill_core.errors import ConfigError, DataError
from agedistill_core.settings import load_settings
from agedistill_core.students.checkpoint import load_checkpoint
from agedistill_core.cli import main as cli
from agedistill_core.evaluate.finetune import Finetune, finetune, stratified_folds
from agedistill_core.students.losses import GroupSoftmaxLoss, OrdinalLoss, make_loss
from agedistill_core.students.train import run_dir, train_student
from agedistill_testing import agedistill_messages

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def distilled(tiny_table, tiny_params_writer, tmp_path_factory):
    """A student distilled for one epoch on the tiny real label table (crops as they are: no
    detector, no alignment, 112 px); its best.pt."""
    root = tmp_path_factory.mktemp("distilled")
    work = root / "work"
    shutil.copytree(tiny_table, work, ignore=shutil.ignore_patterns("students", "benchmarks"))
    s = load_settings("tiny", tiny_params_writer(root, work, epochs=1))
    train_student(s, "mn3_small", progress=False)
    return run_dir(s, "mn3_small") / "best.pt"


def _profile(tmp_path, data: dict, checkpoint, **students):
    """A params file with the repo's base and recipe `groups`, one profile `ft` over ``data``."""
    repo = yaml.safe_load(open(__file__.rsplit("/tests/", 1)[0] + "/params.yaml"))
    recipe = {**repo["recipes"]["groups"]["students"], "init_from": str(checkpoint), "epochs": 1, "batch_size": 8,
              **students}
    params = tmp_path / "params" / "params.yaml"
    params.parent.mkdir(exist_ok=True)
    params.write_text(yaml.safe_dump({"base": repo["base"], "profiles": {"ft": {
        "dataset": data, "faces": {"detector": "ssd", "align": "dlib5"}, "workdir": str(tmp_path / "work"),
        "students": recipe}}}))
    return load_settings("ft", params)


def test_stratified_folds_are_fixed_balanced_and_stratified():
    groups = np.repeat(np.arange(9), 60)
    f = stratified_folds(groups, 5, seed=0)
    assert np.array_equal(f, stratified_folds(groups, 5, seed=0)) and not np.array_equal(f, stratified_folds(groups, 5, 1))
    assert np.bincount(f).tolist() == [108] * 5
    for g in range(9):  # 12 faces of every group in every fold
        assert np.bincount(f[groups == g], minlength=5).tolist() == [12] * 5
    assert sorted(np.bincount(stratified_folds(np.arange(23) % 3, 5, 0)).tolist()) == [4, 4, 5, 5, 5]
    with pytest.raises(DataError):
        stratified_folds(groups, 1, 0)


def test_group_heads_softmax_and_ordinal():
    soft, ordl = make_loss("groups", n_groups=9), make_loss("ordinal", n_groups=9)
    assert isinstance(soft, GroupSoftmaxLoss) and (soft.n_outputs, ordl.n_outputs) == (9, 8)
    y = torch.tensor([0, 3, 8, 5])
    # ordinal: logits that put each face exactly at its group -> that group; P(group > k) never rises with k
    logits = torch.where(torch.arange(8).view(1, -1) < y.view(-1, 1), torch.tensor(6.0), torch.tensor(-6.0))
    assert ordl.groups(logits).tolist() == y.tolist()
    cum = ordl.cumulative(torch.randn(16, 8))
    assert bool((cum[:, 1:] <= cum[:, :-1] + 1e-7).all())
    assert float(ordl(logits, y.float())) < 0.01 < float(ordl(-logits, y.float()))
    onehot = torch.nn.functional.one_hot(y, 9).float() * 10
    assert soft.groups(onehot).tolist() == y.tolist() and float(soft(onehot, y.float())) < 0.01
    assert soft.ages(onehot).tolist() == [0.0, 3.0, 8.0, 5.0]  # the engine's MAE is in groups
    with pytest.raises(ValueError):
        soft(onehot, torch.tensor([0.0, 1.0, 2.0, 9.0]))
    with pytest.raises(ConfigError):
        make_loss("ordinal", n_groups=1)


def test_new_head_on_the_checkpoints_body_at_lr_over_10(distilled, fairface_small, tmp_path):
    s = _profile(tmp_path, {"name": "fairface", "root": str(fairface_small)}, distilled)
    for loss, width in (("groups", 9), ("ordinal", 8)):
        ft = Finetune(load_settings("ft", s.params_path, {"students": {"loss": loss}}), 9, False)
        model = ft.model()
        assert model.get_classifier().out_features == width
        saved = load_checkpoint(distilled)["model"]
        body = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
        assert all(torch.equal(v, saved[k]) for k, v in body.items())  # the distilled body, a new head
    assert s.students.epochs == 1 and s.students.lr_factor == 0.1
    assert yaml.safe_load(open(__file__.rsplit("/tests/", 1)[0] + "/params.yaml"))["recipes"]["groups"]["students"][
        "epochs"] == 35  # SPEC 5: 35 epochs at the student's rate / 10
    from agedistill_core.students.train import base_lr
    assert base_lr(s, "mn3_small") == pytest.approx(0.005 / 10)


@pytest.mark.parametrize("loss", ["groups", "ordinal"])
def test_fairface_k_folds_framed_as_the_checkpoint_records_and_resumed(distilled, fairface_small, tmp_path, loss):
    s = _profile(tmp_path, {"name": "fairface", "root": str(fairface_small)}, distilled, loss=loss, folds=3)
    res = finetune(s, teacher=True, progress=False)
    assert (res["n_groups"], res["head"], len(res["folds"]), res["official_folds"]) == (9, loss, 3, False)
    assert sum(f["test_faces"] for f in res["folds"]) == 15 == res["faces_used"]
    # the checkpoint was trained on the crops with no detector: so are these faces, whatever the profile's ssd
    rec = load_checkpoint(distilled)["config"]["faces"]
    assert res["faces"] == f"{rec['detector']}+{rec['align']}" == "none+dlib5" != f"{s.faces.detector}+{s.faces.align}"
    for key in ("top1", "zero_shot_top1", "teacher_top1"):
        assert res[key] == pytest.approx(np.mean([f[key] for f in res["folds"]]))
        assert 0 <= res[key] <= res[key.replace("top1", "one_off")] <= 1
    per_group = res["per_group"]
    assert sum(g["faces"] for g in per_group.values()) == 15 and set(per_group) <= set(res["groups"])
    assert res["top1"] == pytest.approx(sum(g["top1"] * g["faces"] for g in per_group.values()) / 15)  # 3 folds of 5
    out = run_dir(s, "mn3_small")
    assert json.loads((out / "result.json").read_text())["top1"] == res["top1"]
    ck = load_checkpoint(out / "fold0" / "last.pt")
    assert ck["config"]["students"]["loss"] == loss and ck["extra"]["total_epochs"] == 2  # 1 distilled + 1 here
    assert (out / "fold0" / "metrics.csv").is_file() and (out / "fold0" / "best.pt").is_file()
    # again: every fold resumes its finished run, and the table is the same
    with agedistill_messages() as logs:
        again = finetune(s, teacher=False, progress=False)
    assert sum("resuming after epoch 1" in m for m in logs) == 3
    assert [f["top1"] for f in again["folds"]] == [f["top1"] for f in res["folds"]]


def test_adience_folder_runs_the_same_command_on_its_official_folds(distilled, adience_root, tmp_path):
    s = _profile(tmp_path, {"name": "adience", "root": str(adience_root)}, distilled)
    res = finetune(s, teacher=False, progress=False)
    assert res["n_groups"] == 8 and res["official_folds"] and [f["fold"] for f in res["folds"]] == [0, 1, 2, 3, 4]
    assert all(f["train_faces"] == 16 and f["test_faces"] == 4 for f in res["folds"])
    assert res["top1"] == pytest.approx(np.mean([f["top1"] for f in res["folds"]]))
    rc = cli(["finetune", "--profile", "ft", "--params", str(s.params_path), "--loss", "ordinal", "--no-teacher",
               "--json", str(tmp_path / "a.json")])
    assert rc == 0 and json.loads((tmp_path / "a.json").read_text())["head"] == "ordinal"


def test_apparent_age_finetune_reports_mae_and_epsilon(distilled, appa_root, tmp_path):
    s = _profile(tmp_path, {"name": "appa_real", "root": str(appa_root)}, distilled, loss="paper")
    res = finetune(s, progress=False)
    assert (res["train_faces"], res["test_faces"]) == (16, 8)  # train + valid, then test
    for part in (res, res["zero_shot"]):
        assert 0 <= part["epsilon_error"] <= 1 and part["mae_apparent"] >= 0 and part["mae_real"] >= 0
    assert res["mae_apparent"] != res["zero_shot"]["mae_apparent"]  # the weights did move


def test_older_command_line_and_one_line_errors(distilled, fairface_small, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the older form writes under data/ of the params' folder: use a copy
    params = tmp_path / "params.yaml"
    shutil.copy(__file__.rsplit("/tests/", 1)[0] + "/params.yaml", params)
    out = tmp_path / "ff.json"
    rc = cli(["finetune", "fairface", "--root", str(fairface_small), "--checkpoint", str(distilled), "--params", str(params),
               "--folds", "3", "--epochs", "1", "--batch-size", "8", "--threads", "1", "--no-teacher",
               "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["n_groups"] == 9 and len(res["folds"]) == 3 and res["lr"] == pytest.approx(0.0005)
    capsys.readouterr()
    assert cli(["finetune", "fairface", "--root", str(tmp_path / "nope"), "--checkpoint", str(distilled),
                 "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ground_truth.json" in err[0]
    assert cli(["finetune", "--profile", "fairface", "--params", str(params), "--loss", "groups"]) == 2
    assert "needs students.init_from" in capsys.readouterr().err
    assert cli(["finetune", "--profile", "demo", "--params", str(params), "--loss", "groups"]) == 2
    assert "'demo' has no age groups" in capsys.readouterr().err
