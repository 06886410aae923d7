"""Content changes are changes (issue 17, defect 8).

An image replaced under the same path used to be "up to date" for manifest, crops and
labels: the manifest held no content hash and a crop shard's version was only the
settings hash.  Now the manifest records each image's size, mtime and SHA-1 (hashed only
when size or mtime moved), the crop shard version folds in its images' hashes, and the
label version chains the crop version: the replaced image's shard, and only it, is cropped
and labelled again.  Shards written before content hashes are adopted once when none of
their images changed after they were written.  dvc.yaml's manifest stage depends on the
data roots, so `dvc status` sees an added or replaced image.

Real faces from ../shared/data/utkface/crop_part1 (skipped with the path named when absent).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from agedistill_core import stages
from agedistill_core.datasets import build_manifest
from agedistill_core.datasets.base import CONTENT_COLUMNS
from agedistill_core.dvcyaml import render
from agedistill_core.faces.crops import crop_shard
from agedistill_core.settings import load_settings
from agedistill_core.shards import read_table, shard_path, table_metadata, write_table
from agedistill_core.teacher.label import label_shard
from agedistill_testing import REPO, write_params
from rel_helpers import real_faces

pytestmark = pytest.mark.shared_data


def _folder(tmp_path: Path, n: int) -> Path:
    root = tmp_path / "imgs"
    root.mkdir()
    for f in real_faces(n):
        shutil.copy(f, root / f.name)
    return root


def _manifest(s) -> dict[str, dict]:
    return {r["image_id"]: r for r in read_table(s.manifest_path).to_pylist()}


def _versions(s, folder: Path) -> dict[str, str]:
    return {p.stem: table_metadata(p)["version"] for p in sorted(folder.glob("shard-*.parquet"))}


def _row(path: Path, image_id: str) -> dict:
    return next(r for r in read_table(path).to_pylist() if r["image_id"] == image_id)


def _replace(target: Path, source: Path) -> None:
    """Copy another real face over ``target`` (same path, new bytes) -- what the issue did."""
    data = source.read_bytes()
    assert data != target.read_bytes()
    target.write_bytes(data)


def _stages(s) -> tuple[list, list]:
    shards = stages.manifest_shards(s)
    return [crop_shard(s, sid) for sid in shards], [label_shard(s, sid) for sid in shards]


def test_replaced_image_is_cropped_and_labelled_again_in_its_shard_only(tmp_path, tiny):
    root = _folder(tmp_path, 12)
    _, s = tiny("swap", root=root)
    build_manifest(s)
    _stages(s)
    crops_before, labels_before = _versions(s, s.crops_dir), _versions(s, s.labels_dir)
    assert len(crops_before) == 3
    manifest = _manifest(s)
    victim = sorted(manifest)[6]
    sid = manifest[victim]["shard"]
    old_crop = _row(shard_path(s.crops_dir, sid), victim)
    old_label = _row(shard_path(s.labels_dir, sid), victim)

    _replace(root / manifest[victim]["path"], real_faces(1, offset=7)[0])
    build_manifest(s)
    now = _manifest(s)
    assert [i for i in now if now[i]["sha1"] != manifest[i]["sha1"]] == [victim]
    assert now[victim]["shard"] == sid                                      # sticky: same shard, new content

    crops, labels = _stages(s)
    assert [r.path.stem for r in crops if not r.skipped] == [sid]
    assert [r.path.stem for r in labels if not r.skipped] == [sid]
    crops_after, labels_after = _versions(s, s.crops_dir), _versions(s, s.labels_dir)
    assert {k for k in crops_after if crops_after[k] != crops_before[k]} == {sid}
    assert {k for k in labels_after if labels_after[k] != labels_before[k]} == {sid}
    new_crop = _row(shard_path(s.crops_dir, sid), victim)
    new_label = _row(shard_path(s.labels_dir, sid), victim)
    assert new_crop["jpeg"] != old_crop["jpeg"]
    assert not np.allclose(new_label["probs"], old_label["probs"], atol=1e-4)
    # the other faces of that shard were cropped again to the same crops
    others = [i for i in now if now[i]["shard"] == sid and i != victim]
    assert others and all(_row(shard_path(s.crops_dir, sid), i)["jpeg"] is not None for i in others)
    # and the label table takes the new label
    stages.run_vmage(s)
    vm = {r["image_id"]: r for r in read_table(s.vmage_path, ["image_id", "teacher_age"]).to_pylist()}
    assert vm[victim]["teacher_age"] == pytest.approx(new_label["age"], abs=1e-4)


def test_hash_is_computed_only_when_size_or_mtime_moved(tmp_path, tiny):
    root = _folder(tmp_path, 3)
    _, s = tiny("stat", root=root)
    build_manifest(s)
    first = _manifest(s)
    iid = sorted(first)[0]
    path = root / first[iid]["path"]
    st = os.stat(path)
    assert (first[iid]["size"], first[iid]["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert len(first[iid]["sha1"]) == 40
    # same size, same mtime, other bytes: not re-hashed (a stat per file on every scan, no more)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    build_manifest(s)
    assert _manifest(s)[iid]["sha1"] == first[iid]["sha1"]
    # the mtime moved: hashed again
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    build_manifest(s)
    again = _manifest(s)
    assert again[iid]["sha1"] != first[iid]["sha1"]
    assert all(again[i]["sha1"] == first[i]["sha1"] for i in first if i != iid)


def _as_legacy(s) -> None:
    """The workdir as the code before content hashes left it: manifest without the content
    columns, crop shards versioned by settings only, label versions chaining those."""
    old = read_table(s.manifest_path).drop_columns(list(CONTENT_COLUMNS))
    write_table(old, s.manifest_path)
    for folder in (s.crops_dir, s.labels_dir):
        for path in sorted(folder.glob("shard-*.parquet")):
            meta = table_metadata(path)
            version = meta["version"]
            base, _, rest = version.partition("+img")
            if folder == s.labels_dir:
                base = f"{base}-{rest.split('-', 1)[1]}"
            meta = {k: v for k, v in {**meta, "version": base}.items() if k != "images"}
            table = pq.read_table(path)
            write_table(table.replace_schema_metadata({}), path, meta)


def test_shards_from_before_content_hashes_are_adopted_unless_an_image_changed(tmp_path, tiny):
    root = _folder(tmp_path, 12)
    _, s = tiny("legacy", root=root)
    build_manifest(s)
    _stages(s)
    manifest = _manifest(s)
    victim = sorted(manifest)[1]
    changed_sid = manifest[victim]["shard"]
    # an image replaced after its (legacy) shard was written: ctime newer than the shard file
    _as_legacy(s)
    legacy_crops, legacy_labels = _versions(s, s.crops_dir), _versions(s, s.labels_dir)
    assert all("+img" not in v for v in legacy_crops.values())
    _replace(root / manifest[victim]["path"], real_faces(1, offset=7)[0])

    build_manifest(s)                                  # the old manifest is hashed, once
    assert pq.read_schema(s.manifest_path).names[-3:] == list(CONTENT_COLUMNS)
    crops, labels = _stages(s)
    assert [r.path.stem for r in crops if not r.skipped] == [changed_sid]
    assert [r.path.stem for r in labels if not r.skipped] == [changed_sid]
    crops_now, labels_now = _versions(s, s.crops_dir), _versions(s, s.labels_dir)
    kept = sorted(set(crops_now) - {changed_sid})
    assert kept and all(crops_now[k] == legacy_crops[k] for k in kept)           # adopted: same versions,
    assert all(labels_now[k] == legacy_labels[k] for k in kept)                   # so their labels stay
    assert all(table_metadata(shard_path(s.crops_dir, k)).get("images") for k in kept)
    assert crops_now[changed_sid] != legacy_crops[changed_sid] and "+img" in crops_now[changed_sid]

    # once adopted, a later replacement is seen through the recorded hashes
    other = next(i for i in sorted(manifest) if manifest[i]["shard"] == kept[0])
    _replace(root / manifest[other]["path"], real_faces(1, offset=9)[0])
    build_manifest(s)
    crops, _ = _stages(s)
    assert [r.path.stem for r in crops if not r.skipped] == [kept[0]]


def test_untouched_workdir_stays_up_to_date(tmp_path, tiny):
    root = _folder(tmp_path, 6)
    _, s = tiny("same", root=root)
    build_manifest(s)
    _stages(s)
    before = (_versions(s, s.crops_dir), _versions(s, s.labels_dir))
    (root / sorted(os.listdir(root))[0]).touch()       # a new mtime, the same bytes
    build_manifest(s)
    crops, labels = _stages(s)
    assert all(r.skipped for r in crops) and all(r.skipped for r in labels)
    assert (_versions(s, s.crops_dir), _versions(s, s.labels_dir)) == before


# -- DVC sees the data root ----------------------------------------------------------------------

def test_dvc_yaml_manifest_stage_depends_on_every_data_root(tmp_path):
    params = write_params(tmp_path, {
        "two": {"dataset": {"sources": [{"id": "a", "name": "folder", "root": "imgs_a"},
                                        {"id": "b", "name": "utkface", "root": str(tmp_path / "imgs_b")}]}},
        "demo": {"dataset": {"name": "demo", "root": "data/demo/raw"}}})
    stages = yaml.safe_load(render(load_settings("two", params)))["stages"]
    assert {"imgs_a", "imgs_b"} <= set(stages["manifest"]["deps"])
    assert all("imgs" not in d for st in stages if st != "manifest" for d in stages[st]["deps"])
    # the demo writes its own root: an output of the stage that writes it (a dependency must exist first)
    demo = yaml.safe_load(render(load_settings("demo", params)))["stages"]["manifest"]
    assert {"data/demo/raw": {"persist": True}} in demo["outs"] and "data/demo/raw" not in demo["deps"]
    repo = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["manifest"]
    assert any(isinstance(o, dict) and set(o) == {"data/demo/raw"} for o in repo["outs"])


def _dvc_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGEDISTILL_", "DVC_"))}
    env.update(PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               OMP_NUM_THREADS="1")
    return env


def _dvc(project: Path, *args: str) -> str:
    r = subprocess.run([str(REPO / ".venv" / "bin" / "dvc"), *args], cwd=project, env=_dvc_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"dvc {' '.join(args)}: {r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "dvc").is_file(), reason="needs dvc in .venv/bin (make install)")
def test_dvc_status_sees_a_replaced_and_an_added_image(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    root = project / "imgs"
    root.mkdir()
    faces = real_faces(4)
    for f in faces[:3]:
        shutil.copy(f, root / f.name)
    params = write_params(project, {"p": {"dataset": {"name": "folder", "root": "imgs"}, "shard_size": 2}},
                          default="p")
    doc = yaml.safe_load(render(load_settings("p", params)))
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"manifest": doc["stages"]["manifest"]}}))
    shutil.copytree(REPO / "agedistill_core" / "datasets", project / "agedistill_core" / "datasets",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _dvc(project, "init", "--no-scm", "-q")
    _dvc(project, "repro", "manifest")
    assert "up to date" in _dvc(project, "status")
    _replace(root / faces[0].name, faces[3])
    assert "imgs" in _dvc(project, "status")
    _dvc(project, "repro", "manifest")
    assert "up to date" in _dvc(project, "status")
    shutil.copy(faces[3], root / "new.jpg")
    assert "imgs" in _dvc(project, "status")
