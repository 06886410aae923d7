"""Shared fixture: a tiny real label table (60 UTKFace faces through the real stages).

Built once per test session by the pipeline functions themselves (manifest ->
crops -> teacher labels -> label table), in a temporary work folder.  Tests
that train on it copy nothing: they get a params file whose profile points at
that work folder, and write their runs under ``students/`` of a fresh copy.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
UTKFACE = SHARED_DATA / "utkface" / "crop_part1"
TINY_FACES = 60


def _tiny_profile(workdir: Path, **students) -> dict:
    return {
        "workdir": str(workdir),
        "shard_size": 32,
        "dataset": {"name": "utkface", "root": str(UTKFACE), "limit": TINY_FACES},
        "faces": {"detector": "none", "crop_size": 112},
        "students": {"archs": ["mn3_small"], "epochs": 3, "batch_size": 16, "workers": 0, **students},
    }


def write_tiny_params(folder: Path, workdir: Path, **students) -> Path:
    """A params.yaml (the repo's ``base``) with one profile ``tiny`` over ``workdir``."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())["base"]
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"base": base, "default_profile": "tiny",
                                    "profiles": {"tiny": _tiny_profile(workdir, **students)}}))
    return path


@pytest.fixture(scope="session")
def tiny_table(tmp_path_factory) -> Path:
    """The work folder of a labelled 60-face UTKFace set (manifest, crops, labels, vmage)."""
    if not UTKFACE.is_dir():
        pytest.skip(f"needs real faces in ../shared/data/utkface/crop_part1 ({UTKFACE} missing)")
    from agedistill_core import stages
    from agedistill_core.datasets import build_manifest
    from agedistill_core.settings import load_settings

    root = tmp_path_factory.mktemp("tiny")
    work = root / "work"
    settings = load_settings("tiny", write_tiny_params(root, work))
    build_manifest(settings)
    stages.run_crops(settings)
    stages.run_labels(settings)
    stages.run_vmage(settings)
    return work


@pytest.fixture
def tiny_settings(tiny_table: Path, tmp_path: Path):
    """Factory: settings over a private copy of the tiny set, with student overrides."""
    from agedistill_core.settings import load_settings

    def make(name: str = "run", **students):
        work = tmp_path / name
        if not work.exists():
            shutil.copytree(tiny_table, work, ignore=shutil.ignore_patterns("students", "benchmarks"))
        folder = tmp_path / f"{name}-params"  # beside the work folder: a workdir may not hold its params
        folder.mkdir(exist_ok=True)
        return load_settings("tiny", write_tiny_params(folder, work, **students))

    return make


@pytest.fixture(scope="session")
def tiny_params_writer():
    """``write_tiny_params`` as a fixture (test modules must not import conftest: names clash)."""
    return write_tiny_params


# --- official benchmark layouts, filled with small real faces ------------------------------

def _utk_faces(n: int, size: int = 64):
    """``n`` real UTKFace faces (sorted names, spread over the set) as (age, small uint8 RGB)."""
    import cv2

    if not UTKFACE.is_dir():
        pytest.skip(f"needs real faces in ../shared/data/utkface/crop_part1 ({UTKFACE} missing)")
    names = sorted(p.name for p in UTKFACE.glob("*.jpg"))
    picks = names[:: max(1, len(names) // n)][:n]
    out = []
    for name in picks:
        img = cv2.imread(str(UTKFACE / name))
        out.append((int(name.split("_", 1)[0]), cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)))
    return out


@pytest.fixture(scope="session")
def appa_root(tmp_path_factory) -> Path:
    """APPA-REAL layout: gt_avg_{train,valid,test}.csv + train/ valid/ test/ (12 / 4 / 8 faces)."""
    import cv2

    root = tmp_path_factory.mktemp("appa_real")
    faces = _utk_faces(24)
    sizes = {"train": 12, "valid": 4, "test": 8}
    k = 0
    for folder, n in sizes.items():
        (root / folder).mkdir()
        lines = ["file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age"]
        for _ in range(n):
            age, img = faces[k]
            name = f"{k:06d}.jpg"
            cv2.imwrite(str(root / folder / name), img)
            lines.append(f"{name},{30 + k % 7},{age + 1.5:.4f},{2 + k % 4:.4f},{age}")
            k += 1
        (root / f"gt_avg_{folder}.csv").write_text("\n".join(lines) + "\n")
    return root


ADIENCE_HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
                  "fiducial_yaw_angle\tfiducial_score")


def adience_label(age: int) -> str:
    for lo, hi in ((0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100)):
        if age <= hi:  # an age between two groups joins the next one (labels need not be exact here)
            return f"({lo}, {hi})"
    return "(60, 100)"


@pytest.fixture(scope="session")
def adience_root(tmp_path_factory) -> Path:
    """Adience layout: fold_{0..4}_data.txt (tab-separated) + faces/<user>/coarse_tilt_aligned_face.<id>.<img>;
    4 good faces per fold plus one row of each stray label kind that the cleaning drops."""
    import cv2

    root = tmp_path_factory.mktemp("adience")
    faces = _utk_faces(20)
    for fold in range(5):
        lines = [ADIENCE_HEADER]
        for j in range(4):
            age, img = faces[fold * 4 + j]
            user = f"user{fold}_{j % 2}@N0{fold}"
            orig = f"{9000 + fold * 10 + j}_a1b2c3d4e5_o.jpg"
            face_id = str(100 + j)
            (root / "faces" / user).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "faces" / user / f"coarse_tilt_aligned_face.{face_id}.{orig}"), img)
            lines.append(f"{user}\t{orig}\t{face_id}\t{adience_label(age)}\t{'mf'[j % 2]}\t0\t0\t64\t64\t0\t0\t80")
        lines.append(f"user{fold}_x@N0\t1_x_o.jpg\t1\tNone\tu\t0\t0\t64\t64\t0\t0\t80")
        lines.append(f"user{fold}_x@N0\t2_x_o.jpg\t2\t(38, 48)\tf\t0\t0\t64\t64\t0\t0\t80")
        (root / f"fold_{fold}_data.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def fairface_small(tmp_path_factory) -> Path:
    """FairFace layout (ground_truth.json + images), 15 small real faces."""
    import json

    import cv2

    root = tmp_path_factory.mktemp("fairface")
    (root / "val").mkdir()
    edges = (3, 10, 20, 30, 40, 50, 60, 70)
    groups = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
    entries = []
    for k, (age, img) in enumerate(_utk_faces(15)):
        name = f"val/{k + 1}.jpg"
        cv2.imwrite(str(root / name), img)
        entries.append({"id": k + 1, "filename": name, "age": groups[sum(age >= e for e in edges)], "gender": "Male"})
    (root / "ground_truth.json").write_text(json.dumps(entries))
    return root
