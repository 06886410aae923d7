"""Every adapter keeps its paths inside its root (issue 17, defect 11), and a folder the scan
cannot list is named (issue 17, minor).

A label file is input like any other: a FairFace ``ground_truth.json`` whose ``filename`` is
absolute or climbs out with ``..`` used to be read into the crops; a missing ``filename`` or a
mapping instead of a list was a traceback.  Now a path outside the root is left out of the
manifest and named in a note (nothing outside the root is read), and a malformed label file
is one line naming the entry and the fix.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from agedistill_core.datasets import DATASETS, build_manifest
from agedistill_core.datasets.base import manifest_notes, path_problem
from agedistill_core.errors import DataError
from agedistill_core.faces.crops import crop_shard
from agedistill_core.settings import load_settings
from agedistill_core.shards import read_table, write_table
from agedistill_testing import FAIRFACE, REPO, UTKFACE, needs_fairface, needs_utkface, write_params

OUTSIDE = ["/etc/hostname", "../secret.jpg", "a/../../secret.jpg", "..", "a/..", "", "   ", "a\x00.jpg", None, 12]


@pytest.mark.parametrize("path", OUTSIDE)
def test_path_problem_names_what_is_wrong(path):
    assert path_problem(path) is not None
    assert path_problem("a/b.jpg") is None and path_problem("caf\udce9.jpg") is None
    assert path_problem("C:\\x..jpg") is None and path_problem("..a.jpg") is None     # odd, but inside


def _fairface(tmp_path: Path, entries) -> tuple[Path, object]:
    """A FairFace-style root with three real FairFace faces and ``entries`` as ground_truth.json."""
    root = tmp_path / "ff"
    root.mkdir()
    for name in ("fairface_0001.jpg", "fairface_0002.jpg", "fairface_0003.jpg"):
        shutil.copy(FAIRFACE / name, root / name)
    (root / "ground_truth.json").write_text(json.dumps(entries))
    params = write_params(tmp_path, {"f": {"workdir": str(tmp_path / "work"), "shard_size": 8,
                                           "dataset": {"name": "fairface", "root": str(root)}}})
    return root, load_settings("f", params)


def _entry(k: int, filename) -> dict:
    return {"id": f"e{k}", "filename": filename, "age": "30-39", "gender": "Male"}


@needs_fairface
@needs_utkface
@pytest.mark.shared_data
def test_fairface_filename_outside_the_root_is_left_out_and_never_read(tmp_path):
    stranger = sorted(UTKFACE.glob("*.jpg"))[0]              # a real face outside the root
    (tmp_path / "secret.jpg").write_bytes(stranger.read_bytes())
    entries = [_entry(1, "fairface_0001.jpg"), _entry(2, str(stranger)), _entry(3, "../secret.jpg"),
               _entry(4, "fairface_0003.jpg")]
    root, s = _fairface(tmp_path, entries)
    table = build_manifest(s)
    assert table["path"].to_pylist() == ["fairface_0001.jpg", "fairface_0003.jpg"]
    [note] = [n for n in manifest_notes(s) if "left out" in n]
    assert "left out 2 entries of source 'fairface'" in note and str(stranger) in note and "'../secret.jpg'" in note
    assert "\n" not in note
    crops = read_table(crop_shard(s, "shard-00000").path)
    assert crops["image_id"].to_pylist() == ["fairface/fairface_0001.jpg", "fairface/fairface_0003.jpg"]


@needs_fairface
@pytest.mark.shared_data
@pytest.mark.parametrize("content, message", [
    ({"0": _entry(0, "fairface_0001.jpg")}, "holds a mapping, not a list of entries; expected"),
    ([_entry(0, "fairface_0001.jpg"), "fairface_0002.jpg"], "entry [1] is a string, not a mapping with id, filename"),
    ([{"id": "x7", "age": "30-39"}], "entry [0] (id 'x7') has no filename (got None); give it the image's path"),
    ([_entry(0, 12)], "entry [0] (id 'e0') has no filename (got 12)"),
])
def test_malformed_ground_truth_is_one_line(tmp_path, content, message):
    _, s = _fairface(tmp_path, content)
    with pytest.raises(DataError) as err:
        build_manifest(s)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "ground_truth.json" in str(err.value)
    assert not s.manifest_path.exists()


@needs_fairface
@pytest.mark.shared_data
def test_only_entries_outside_the_root_is_one_line(tmp_path):
    _, s = _fairface(tmp_path, [_entry(0, "/etc/hostname")])
    with pytest.raises(DataError, match=r"no images found under .* \(1 entry of its labels name a file outside it, "
                                        r"e.g. '/etc/hostname', which is an absolute path\)"):
        build_manifest(s)


def test_appa_real_adience_and_imdb_wiki_paths_stay_inside(tmp_path):
    appa = tmp_path / "appa"
    appa.mkdir()
    (appa / "gt_avg_test.csv").write_text("file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age\n"
                                          "ok.jpg,3,30,1,30\n../../x.jpg,3,30,1,30\n")
    adience = tmp_path / "adience"
    adience.mkdir()
    (adience / "fold_0_data.txt").write_text(
        "user_id\toriginal_image\tface_id\tage\tgender\n"
        "u1\tok.jpg\t1\t(25, 32)\tf\n../..\tx.jpg\t1\t(25, 32)\tf\nu2\tb.jpg\t1\t(25, 32)\tf\textra\tcells\n")
    imdb = tmp_path / "imdb"
    imdb.mkdir()
    paths = ["01/ok.jpg", "/etc/hostname", "01/../../x.jpg"]
    cells = np.empty((1, 3), dtype=object)
    for i, p in enumerate(paths):
        cells[0, i] = np.array([p])
    savemat(imdb / "imdb.mat", {"imdb": {
        "dob": np.array([[723000.0] * 3]), "photo_taken": np.array([[2000] * 3], dtype=np.uint16),
        "full_path": cells, "face_score": np.array([[3.0] * 3]), "second_face_score": np.array([[np.nan] * 3]),
        "celeb_id": np.array([[1, 2, 3]])}})
    for name, root, kept in (("appa_real", appa, "test/ok.jpg"),
                             ("adience", adience, "faces/u1/coarse_tilt_aligned_face.1.ok.jpg"),
                             ("imdb_wiki", imdb, "01/ok.jpg")):
        items = list(DATASETS.get(name)(root))
        good = [it.path for it in items if path_problem(it.path) is None]
        assert kept in good, name
        assert len(items) - len(good) >= 1, name          # the bad ones are caught by the manifest's check
    assert "faces/u2/coarse_tilt_aligned_face.1.b.jpg" in [it.path for it in DATASETS.get("adience")(adience)]


def test_appa_real_bad_number_of_ratings_is_one_line(tmp_path):
    (tmp_path / "gt_avg_test.csv").write_text("file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age\n"
                                              "a.jpg,many,30,1,30\n")
    with pytest.raises(DataError, match=r"gt_avg_test.csv:2: column num_ratings is 'many', not a number"):
        list(DATASETS.get("appa_real")(tmp_path))
    (tmp_path / "gt_avg_test.csv").write_bytes(b"file_name,num_ratings,apparent_age_avg,apparent_age_std\n"
                                               b"caf\xe9.jpg,3,30,1\n")
    with pytest.raises(DataError, match="is not a readable UTF-8 CSV"):
        list(DATASETS.get("appa_real")(tmp_path))


@needs_utkface
@pytest.mark.shared_data
def test_a_manifest_path_outside_the_root_is_never_read(tmp_path):
    """A manifest written before the check (or edited) names a file outside the root: the crop
    stage refuses the shard in one line instead of reading it."""
    root = tmp_path / "imgs"
    root.mkdir()
    faces = sorted(UTKFACE.glob("*.jpg"))[:2]
    shutil.copy(faces[0], root / faces[0].name)
    params = write_params(tmp_path, {"u": {"workdir": str(tmp_path / "w"),
                                           "dataset": {"name": "utkface", "root": str(root)}}})
    s = load_settings("u", params)
    table = build_manifest(s)
    rows = table.to_pylist()
    rows[0]["path"] = str(faces[1])
    write_table(table.from_pylist(rows, schema=table.schema), s.manifest_path)
    with pytest.raises(DataError, match=r"is an absolute path, outside the data root .*; run `agedistill manifest` again"):
        crop_shard(s, "shard-00000")


# -- a folder the scan cannot list --------------------------------------------------------------

SCAN = textwrap.dedent("""\
    import sys
    from agedistill_core.datasets import build_manifest
    from agedistill_core.datasets.base import manifest_notes
    from agedistill_core.settings import load_settings
    s = load_settings("u", sys.argv[1])
    print(build_manifest(s).num_rows)
    for note in manifest_notes(s):
        print(note)
    """)


@needs_utkface
@pytest.mark.shared_data
def test_unreadable_sub_folder_is_named(tmp_path):
    """As root, permissions do not stop a read: the scan runs without the capabilities that
    bypass them (setpriv), as an ordinary user would."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder unreadable")
        prefix = [shutil.which("setpriv"), "--bounding-set=-dac_override,-dac_read_search"]
    root = tmp_path / "imgs"
    (root / "locked").mkdir(parents=True)
    faces = sorted(UTKFACE.glob("*.jpg"))[:3]
    shutil.copy(faces[0], root / faces[0].name)
    shutil.copy(faces[1], root / "locked" / faces[1].name)
    params = write_params(tmp_path, {"u": {"workdir": str(tmp_path / "w"),
                                           "dataset": {"name": "utkface", "root": str(root)}}})
    (root / "locked").chmod(0)
    try:
        r = subprocess.run([*prefix, sys.executable, "-c", SCAN, str(params)], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    finally:
        (root / "locked").chmod(0o755)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "1"
    [note] = [ln for ln in lines[1:] if "cannot list" in ln]
    assert f"cannot list 1 folder under {root} (locked); its images are not in the manifest" in note
    assert "chmod u+rx" in note
