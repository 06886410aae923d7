"""DVC versions the data for real: push to a remote, lose the cache and the outputs, pull, same bytes.

Every test works in a throw-away DVC project under tmp_path (git init + dvc init) and calls the
venv's own ``dvc`` executable with a clean environment (no analytics, no global or system DVC
config, HOME in tmp_path), so nothing here touches the repository's data, cache or remote.

* the repository's ``.dvc/config``: its default remote is a folder beside the checkout;
* crop shards made by the project's CLI on real UTKFace faces (needs ../shared), pushed to that
  default remote, pulled back into the project and into a fresh ``git clone`` of it;
* a ``dvc add``-ed folder through a remote that is a tmp folder, and the failure when the remote
  lost the data;
* an S3 remote: a moto S3 server on loopback (``.venv-moto``, skipped when absent).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agedistill_testing import UTKFACE, needs_utkface, write_params

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
AGEDISTILL = BIN / "agedistill"
MOTO_SERVER = REPO / ".venv-moto" / "bin" / "moto_server"
STORE_NAME = "agedistill-dvc-store"   # the folder beside the checkout that .dvc/config names

pytestmark = pytest.mark.skipif(not DVC.is_file(), reason=f"needs the dvc executable beside {sys.executable} ({DVC} missing)")


# -- helpers ----------------------------------------------------------------------------------
def clean_env(tmp_path: Path) -> dict[str, str]:
    """Only what dvc, git and the CLI need; DVC's global/system config and site cache in tmp."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": f"{BIN}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "COLUMNS": "200",
        "DVC_NO_ANALYTICS": "1",
        "DVC_STUDIO_OFFLINE": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    }


def run(args: list[str], cwd: Path, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode} in {cwd}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def dvc(project: Path, env: dict[str, str], *args, ok: bool = True) -> subprocess.CompletedProcess:
    return run([DVC, *args], project, env, ok)


def new_project(path: Path, env: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    run(["git", "init", "-q"], path, env)
    dvc(path, env, "init", "-q")
    return path


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by its path relative to root."""
    assert root.is_dir(), f"{root} missing"
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".gitignore" != p.name}


def store_files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*") if p.is_file()) if store.is_dir() else []


def write_blobs(folder: Path) -> None:
    """Binary files of assorted sizes, a nested folder, an empty file and a name with a space."""
    rng = random.Random(0)
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "a.bin").write_bytes(rng.randbytes(70_000))
    (folder / "nested" / "b c.bin").write_bytes(rng.randbytes(1_234))
    (folder / "nested" / "deeper" / "d.bin").write_bytes(rng.randbytes(300_001))
    (folder / "nested" / "empty").write_bytes(b"")


# -- the repository's own default remote ------------------------------------------------------
def test_repo_config_default_remote_is_a_folder_beside_the_checkout(tmp_path):
    text = (REPO / ".dvc" / "config").read_text()
    urls = re.findall(r"^\s*url\s*=\s*(\S+)\s*$", text, flags=re.M)
    assert urls, f"{REPO / '.dvc/config'} names no remote url"
    assert all("://" not in u and not Path(u).is_absolute() for u in urls), \
        f"the committed remote must be a relative local folder so every checkout finds its own, got {urls}"

    env = clean_env(tmp_path)
    parent = tmp_path / "somewhere"
    project = new_project(parent / "checkout", env)
    shutil.copyfile(REPO / ".dvc" / "config", project / ".dvc" / "config")

    default = dvc(project, env, "remote", "default").stdout.strip()
    assert default, "the repository's .dvc/config sets no default remote"
    url = dvc(project, env, "config", f"remote.{default}.url").stdout.strip()   # as dvc resolves it
    store = parent / STORE_NAME
    assert Path(url) == store, f"default remote {default!r} resolves to {url}, expected {store}"

    # No setup: the first push creates the folder, outside the checkout.
    (project / "note.txt").write_text("versioned\n")
    dvc(project, env, "add", "-q", "note.txt")
    assert not store.exists()
    dvc(project, env, "push")
    digest = hashlib.md5(b"versioned\n").hexdigest()
    assert (store / "files" / "md5" / digest[:2] / digest[2:]).read_bytes() == b"versioned\n"


# -- real project outputs through the default remote and a fresh clone -------------------------
@needs_utkface
@pytest.mark.shared_data
def test_cli_crop_shards_come_back_byte_for_byte_after_push_and_pull(tmp_path):
    if not AGEDISTILL.is_file():
        pytest.skip(f"needs the agedistill CLI beside {sys.executable} ({AGEDISTILL} missing)")
    env = clean_env(tmp_path)
    parent = tmp_path / "site"
    project = new_project(parent / "agedistill", env)
    shutil.copyfile(REPO / ".dvc" / "config", project / ".dvc" / "config")   # the repo's default remote

    raw = project / "raw"
    raw.mkdir()
    faces = sorted(UTKFACE.glob("*.jpg"))[:6]
    assert len(faces) == 6, f"fewer than 6 faces in {UTKFACE}"
    for face in faces:
        shutil.copyfile(face, raw / face.name)
    write_params(project, {"tiny": {"dataset": {"name": "utkface", "root": "raw"},
                                    "faces": {"detector": "none", "align": "none", "workers": 1},
                                    "shard_size": 4}}, default="tiny")
    cli = "agedistill --params params.yaml --profile tiny"
    (project / "dvc.yaml").write_text(
        "stages:\n"
        f"  manifest:\n    cmd: {cli} manifest\n    deps: [raw, params.yaml]\n"
        "    outs: [data/tiny/manifest.parquet]\n"
        f"  crops:\n    cmd: {cli} crops\n    deps: [data/tiny/manifest.parquet, raw, params.yaml]\n"
        "    outs: [data/tiny/crops]\n")
    dvc(project, env, "add", "-q", "raw")
    dvc(project, env, "repro")

    made = snapshot(project / "data")
    shards = sorted(k for k in made if k.startswith("tiny/crops/") and k.endswith(".parquet"))
    assert "tiny/manifest.parquet" in made and shards, made
    assert sum(pq.read_metadata(project / "data" / s).num_rows for s in shards) == len(faces)
    inputs = snapshot(raw)

    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-q", "-m", "pipeline, lock and remote; no data"], project, env)
    tracked = run(["git", "ls-files"], project, env).stdout.split()
    assert "dvc.lock" in tracked and ".dvc/config" in tracked
    committed_data = [t for t in tracked if t.startswith(("data/", "raw/")) and not t.endswith("/.gitignore")]
    assert not committed_data, f"data committed to git: {committed_data}"

    store = parent / STORE_NAME
    dvc(project, env, "push")
    assert len(store_files(store)) >= len(faces) + len(shards) + 1

    shutil.rmtree(project / "data")
    shutil.rmtree(raw)
    shutil.rmtree(project / ".dvc" / "cache")
    dvc(project, env, "pull")
    assert snapshot(project / "data") == made
    assert snapshot(raw) == inputs

    # A fresh clone beside it: no setup, the same default remote, the same bytes, nothing to redo.
    clone = parent / "agedistill-clone"
    run(["git", "clone", "-q", project, clone], parent, env)
    assert not list(clone.rglob("*.parquet")) and not (clone / "raw").exists()
    dvc(clone, env, "pull")
    assert snapshot(clone / "data") == made
    assert snapshot(clone / "raw") == inputs
    assert "up to date" in dvc(clone, env, "status").stdout


# -- any folder as the remote; the error when it lost the data --------------------------------
def test_added_folder_round_trips_through_a_tmp_folder_remote(tmp_path):
    env = clean_env(tmp_path)
    project = new_project(tmp_path / "proj", env)
    store = tmp_path / "elsewhere" / "store"
    dvc(project, env, "remote", "add", "-d", "tmpstore", store)
    write_blobs(project / "blobs")
    made = snapshot(project / "blobs")
    dvc(project, env, "add", "-q", "blobs")
    dvc(project, env, "push")
    assert len(store_files(store)) == len(made) + 1   # one object per file, plus the folder listing (.dir)

    shutil.rmtree(project / "blobs")
    shutil.rmtree(project / ".dvc" / "cache")
    dvc(project, env, "pull")
    assert snapshot(project / "blobs") == made

    # The remote lost everything: pull fails (non-zero) and names the missing files.
    shutil.rmtree(project / "blobs")
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(store)
    proc = dvc(project, env, "pull", ok=False)
    assert proc.returncode != 0
    assert "missing" in (proc.stdout + proc.stderr).lower()
    assert not (project / "blobs").exists()


# -- S3 (moto on loopback) --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_s3(tmp_path):
    """An S3-compatible server on 127.0.0.1 (moto, from its own venv); yields its endpoint URL."""
    port = _free_port()
    env = {**clean_env(tmp_path), "PATH": f"{MOTO_SERVER.parent}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break                         # it answers
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto_server did not come up: {(tmp_path / 'moto.log').read_text()}")
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _s3_keys(endpoint: str, bucket: str) -> list[str]:
    with urllib.request.urlopen(f"{endpoint}/{bucket}?list-type=2", timeout=10) as resp:
        root = ET.fromstring(resp.read())
    return sorted(el.text for el in root.iter() if el.tag.endswith("}Key") or el.tag == "Key")


@pytest.mark.skipif(not MOTO_SERVER.is_file(),
                    reason=f"needs moto's S3 server in its own venv ({MOTO_SERVER} missing; see docs/DVC.md)")
@pytest.mark.skipif(importlib.util.find_spec("dvc_s3") is None,
                    reason="needs dvc-s3 in this venv for s3:// remotes (pip install dvc-s3==3.3.0; see docs/DVC.md)")
def test_added_folder_round_trips_through_an_s3_remote(tmp_path, moto_s3):
    bucket = "agedistill-dvc"
    urllib.request.urlopen(urllib.request.Request(f"{moto_s3}/{bucket}", method="PUT"), timeout=10).close()

    env = clean_env(tmp_path)
    project = new_project(tmp_path / "proj", env)
    # What `dvc remote add -d s3store s3://BUCKET/store`, `dvc remote modify s3store endpointurl URL`
    # and `dvc remote modify --local s3store access_key_id|secret_access_key ...` write (docs/DVC.md):
    # the credentials go to the git-ignored config.local.
    (project / ".dvc" / "config").write_text(
        "[core]\n    remote = s3store\n"
        f"['remote \"s3store\"']\n    url = s3://{bucket}/store\n    endpointurl = {moto_s3}\n"
        "    region = us-east-1\n")
    (project / ".dvc" / "config.local").write_text(
        "['remote \"s3store\"']\n    access_key_id = testing\n    secret_access_key = testing\n")
    assert ".dvc/config.local" not in run(["git", "ls-files", "--others", "--exclude-standard"], project, env).stdout

    write_blobs(project / "blobs")
    made = snapshot(project / "blobs")
    dvc(project, env, "add", "-q", "blobs")
    assert _s3_keys(moto_s3, bucket) == []
    dvc(project, env, "push")
    keys = _s3_keys(moto_s3, bucket)
    assert len(keys) == len(made) + 1 and all(k.startswith("store/files/md5/") for k in keys), keys

    shutil.rmtree(project / "blobs")
    shutil.rmtree(project / ".dvc" / "cache")
    dvc(project, env, "pull")
    assert snapshot(project / "blobs") == made
