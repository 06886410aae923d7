"""The manifest: one row per source image, the same schema for every data set.

Columns: ``image_id`` (stable: dataset/relative path), ``dataset``, ``path``
(relative to the data root), ``subject``, ``age`` and ``age_std`` (years,
nullable), ``age_group`` (e.g. "30-39", nullable), ``split`` (train/val/test),
``fold`` (nullable), ``shard``, then (added later, so read columns by name)
``path_bytes``, ``duplicate_of``, and ``size``, ``mtime_ns`` and ``sha1``: what the
file held when the manifest was built.

Content changes are changes: ``sha1`` is the SHA-1 of the file's bytes, computed
when the image is new or its size or modification time moved since the previous
manifest (otherwise carried over, so a re-scan only stats the files; a manifest
written before these columns is hashed once).  The crop stage folds the shard's
``(image_id, sha1)`` pairs into its version (``images_fingerprint``), so an image
replaced under the same path re-crops and re-labels its shard, and only its shard.

Splits are identity-disjoint (by ``subject``; a data set without identities
uses one subject per image) and fixed by the seed.  Shards are sticky: an image
keeps the shard it had in the previous manifest, and new images fill new
shards, so adding images never re-labels old ones.

Odd files, each recorded, never silent:

- A file name that is not valid UTF-8 (a Latin-1 ``caf\\xe9.jpg``) is kept: its
  ``path`` (and ``image_id``) show the undecodable bytes as ``\\xNN`` escapes,
  and ``path_bytes`` holds the real name's bytes, which the crop stage opens
  (``real_path``).  ``path_bytes`` is null for every ordinary name.
- A byte-identical copy of another file of the manifest (same size, same
  SHA-1) has ``duplicate_of`` = the first copy's ``image_id`` and that copy's
  split and fold (no train/test leak); the crop stage records it as
  ``duplicate`` and it is never labelled.  The first copy is the one that was
  already an original in the previous manifest, else the first by source and
  path, so adding a copy never re-labels old images.
- A path an adapter gives that is not inside its root (absolute, with ``..``,
  empty) is left out and named in a note: no file outside a data root is read.
- A sub-folder that cannot be listed (permissions) is named in a note; its
  images are not in the manifest until it can be read.
- Files under a source root that its adapter did not take (GIF where OpenCV
  cannot decode it, HEIC, files without a suffix, ...) are counted by kind in
  the manifest metadata (``skipped``); ``manifest_notes`` gives the one-line
  messages (also logged as warnings on the ``agedistill`` logger).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from agedistill_core.errors import DataError
from agedistill_core.registry import Registry
from agedistill_core.shards import file_sha1, read_table, shard_id, shard_index, table_metadata, write_table

if TYPE_CHECKING:  # settings sit a layer above (they validate names against the registries)
    from agedistill_core.settings import Settings

log = logging.getLogger("agedistill.datasets")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# read too when this OpenCV decodes them (GIF: the first frame; OpenCV >= 4.11 here)
OPTIONAL_SUFFIXES = (".gif",)
# files a data set keeps next to its images (labels, lists): not counted as skipped
SIDECAR_SUFFIXES = {".json", ".csv", ".tsv", ".txt", ".mat", ".md", ".yaml", ".yml", ".xml", ".parquet", ".zip"}
NO_SUFFIX = "(no suffix)"

MANIFEST_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("dataset", pa.string()),
    ("path", pa.string()),
    ("subject", pa.string()),
    ("age", pa.float32()),
    ("age_std", pa.float32()),
    ("age_group", pa.string()),
    ("split", pa.string()),
    ("fold", pa.int16()),
    ("shard", pa.string()),
    ("path_bytes", pa.binary()),       # the real name's bytes when it is not valid UTF-8, else null
    ("duplicate_of", pa.string()),     # image_id of the byte-identical first copy, else null
    ("size", pa.int64()),              # file size in bytes when scanned (null: the file cannot be read)
    ("mtime_ns", pa.int64()),          # its modification time (ns since the epoch)
    ("sha1", pa.string()),             # SHA-1 of its bytes (null: unreadable); see images_fingerprint
])
CONTENT_COLUMNS = ("size", "mtime_ns", "sha1")


@dataclass
class Item:
    """One source image as an adapter sees it (split/shard are filled later)."""
    path: str                      # relative to the data root
    subject: str | None = None
    age: float | None = None
    age_std: float | None = None
    age_group: str | None = None
    split: str | None = None       # adapters with official splits set this
    fold: int | None = None


Scanner = Callable[[Path], Iterable[Item]]
DATASETS: Registry[Scanner] = Registry("dataset")

# A 1x1 GIF: decoded once to learn whether this OpenCV reads GIF.
_PROBES = {".gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
                   b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"}


@functools.lru_cache(maxsize=None)
def image_suffixes() -> frozenset[str]:
    """The suffixes ``list_images`` takes: ``IMAGE_SUFFIXES`` plus those of
    ``OPTIONAL_SUFFIXES`` this OpenCV decodes."""
    import cv2
    import numpy as np

    extra = set()
    for suffix in OPTIONAL_SUFFIXES:
        try:
            if cv2.imdecode(np.frombuffer(_PROBES[suffix], np.uint8), cv2.IMREAD_COLOR) is not None:
                extra.add(suffix)
        except cv2.error:
            pass
    return frozenset(IMAGE_SUFFIXES | extra)


def walk_files(root: Path, unreadable: list[str] | None = None) -> Iterator[Path]:
    """Every file under ``root`` (symlinked folders are not entered, as ``Path.rglob``).

    A folder that cannot be listed is appended to ``unreadable`` (its path relative
    to ``root``, "." for the root itself) instead of being skipped without a word."""
    root = Path(root)

    def failed(err: OSError) -> None:
        if unreadable is not None:
            where = Path(os.fsdecode(err.filename or root))
            unreadable.append(where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where))

    for folder, _dirs, names in os.walk(root, onerror=failed):
        for name in names:
            yield Path(folder) / name


def unreadable_folders(root: Path) -> list[str]:
    """Sub-folders of ``root`` that cannot be listed (relative paths, sorted)."""
    out: list[str] = []
    for _ in walk_files(root, out):
        pass
    return sorted(out)


def list_images(root: Path) -> list[str]:
    """Relative paths of all image files under ``root``, sorted.

    A name that is not valid UTF-8 comes back as Python gives it (undecodable
    bytes as surrogates), so ``root / rel`` opens the real file.  Folders that
    cannot be listed are named by the manifest (``unreadable_folders``)."""
    suffixes = image_suffixes()
    return sorted(
        p.relative_to(root).as_posix()
        for p in walk_files(root)
        if p.suffix.lower() in suffixes and p.is_file()
    )


def path_problem(path: object) -> str | None:
    """Why ``path`` (an adapter's, relative to its root) would read outside the root; None when it is fine."""
    if not isinstance(path, str):
        return f"is not a file name (a {type(path).__name__})"
    if not path.strip():
        return "is empty"
    if "\x00" in path:
        return "holds a NUL byte"
    if PurePosixPath(path).is_absolute():
        return "is an absolute path"
    if ".." in PurePosixPath(path).parts:
        return "climbs out of the root with '..'"
    return None


def file_kind(name: str) -> str:
    """A file's kind for the skipped counts: its lower-case suffix, or ``(no suffix)``."""
    return Path(name).suffix.lower() or NO_SUFFIX


def skipped_files(root: Path, taken: Iterable[str]) -> dict[str, list[str]]:
    """Files under ``root`` (relative paths) that are not in ``taken``, by kind.

    Hidden files (``.DS_Store``) and data-set sidecars (``SIDECAR_SUFFIXES``:
    label files, lists) are not counted."""
    taken = set(taken)
    out: dict[str, list[str]] = defaultdict(list)
    if not root.is_dir():
        return {}
    for p in walk_files(root):
        if p.name.startswith("."):
            continue
        rel = p.relative_to(root).as_posix()
        if rel in taken or p.suffix.lower() in SIDECAR_SUFFIXES or not p.is_file():
            continue
        out[file_kind(p.name)].append(rel)
    return {k: sorted(v) for k, v in sorted(out.items())}


def display_name(name: str) -> tuple[str, bytes | None]:
    """A file name as valid UTF-8, and its real bytes when it was not valid UTF-8.

    ``caf\\udce9.jpg`` (a Latin-1 name as Python reads it) -> ("caf\\\\xe9.jpg",
    b"caf\\xe9.jpg"); an ordinary name -> (name, None)."""
    try:
        name.encode("utf-8")
        return name, None
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        return raw.decode("utf-8", "backslashreplace"), raw


def utf8_text(text: str | None) -> str | None:
    """``text`` with anything not encodable as UTF-8 (undecodable file-name bytes) as ``\\xNN``."""
    if text is None:
        return None
    return display_name(text)[0] if isinstance(text, str) else text


def real_path(root: Path, path: str, path_bytes: bytes | None = None) -> Path:
    """The file of a manifest row: its real (non-UTF-8) name when ``path_bytes`` is set.

    A path that would leave ``root`` (a manifest written before adapters' paths were
    checked) is a one-line ``DataError``: nothing outside a data root is read."""
    rel = os.fsdecode(path_bytes) if path_bytes else path
    problem = path_problem(rel)
    if problem:
        raise DataError(f"manifest path {utf8_text(str(rel))!r} {problem}, outside the data root {utf8_text(str(root))}; "
                        f"run `agedistill manifest` again")
    return Path(root) / rel


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from strings (not Python's salted hash())."""
    digest = hashlib.sha1("|".join(map(str, parts)).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(subject: str, seed: int, test: float, val: float) -> str:
    u = unit_hash("split", seed, subject)
    if u < test:
        return "test"
    return "val" if (u - test) / (1 - test) < val else "train"


def _scanned(settings: Settings, source, outside: list[tuple[str, str]] | None = None) -> list[Item]:
    """Every item the source's adapter yields (no ``limit``) whose path stays inside the root;
    the others are appended to ``outside`` as (path, problem)."""
    root = source.root
    scanner = DATASETS.get(source.name)
    if not root.exists() and not getattr(scanner, "creates_root", False):
        where = (f"dataset.root in profile {settings.profile!r}" if not settings.dataset.sources
                 else f"the root of source {source.id!r} in profile {settings.profile!r}")
        raise DataError(f"data root {root} does not exist; set {where} of {settings.params_path} (or pass --data-root)")
    items, bad = [], []
    for it in scanner(root):
        problem = path_problem(it.path)
        if problem is None:
            items.append(it)
        else:
            bad.append((utf8_text(str(it.path)), problem))
    if outside is not None:
        outside.extend(bad)
    if not items:
        hint = (f" ({len(bad)} entr{'ies' if len(bad) != 1 else 'y'} of its labels name a file outside it, "
                f"e.g. {bad[0][0]!r}, which {bad[0][1]})") if bad else ""
        unreadable = unreadable_folders(root) if root.is_dir() else []
        if unreadable:
            hint += f" (cannot list {_examples(unreadable)}: check permissions)"
        raise DataError(f"no images found under {utf8_text(str(root))} for dataset {source.name!r}; check its root"
                        + hint + _skipped_hint(skipped_files(root, ())))
    return items


def _limited(settings: Settings, source, items: list[Item]) -> list[Item]:
    if source.limit is not None and len(items) > source.limit:
        items = sorted(items, key=lambda it: unit_hash("limit", settings.seed, it.path))[:source.limit]
    return items


def scan_source(settings: Settings, source) -> list[Item]:
    """One source's items (its adapter over its root; fixed-seed ``limit`` sample)."""
    return _limited(settings, source, _scanned(settings, source))


def scan_dataset(settings: Settings) -> list[Item]:
    """Items of the first (or only) source; see ``scan_source``."""
    return scan_source(settings, settings.sources[0])


def file_content(path: Path, before: tuple | None = None) -> tuple[int | None, int | None, str | None]:
    """(size, mtime_ns, sha1) of a file; the SHA-1 is carried over from ``before`` (a previous
    (size, mtime_ns, sha1)) when size and modification time are unchanged, else computed.

    The file is stat-ed before it is read: a write during the read moves its mtime past the
    recorded one, so the next scan hashes it again.  Unreadable: (None, None, None)."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None, None
    if before is not None and before[2] is not None and (before[0], before[1]) == (st.st_size, st.st_mtime_ns):
        return st.st_size, st.st_mtime_ns, before[2]
    digest = file_sha1(path)
    return (st.st_size, st.st_mtime_ns, digest) if digest is not None else (None, None, None)


def images_fingerprint(ids: list[str], digests: list[str | None] | None) -> str | None:
    """A short hash of a shard's images: its (image_id, sha1) pairs.  It changes when an image
    of the shard is replaced, added or removed, and only then.  None when ``digests`` is None
    (a manifest written before content hashes)."""
    if digests is None:
        return None
    pairs = sorted(zip(ids, digests))
    return hashlib.sha1(json.dumps(pairs).encode("utf-8", "surrogateescape")).hexdigest()[:12]


def unchanged_since(paths: list[Path], when_ns: int) -> bool:
    """Whether none of ``paths`` was written, replaced or had its inode changed at or after
    ``when_ns`` (its ctime, which no tool can set back, and mtime are older).  A file that
    cannot be stat-ed counts as changed."""
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if st.st_ctime_ns >= when_ns or st.st_mtime_ns >= when_ns:
            return False
    return True


def find_duplicates(paths: list[Path], prefer: list[bool] | None = None,
                    content: list[tuple] | None = None) -> dict[int, int]:
    """Byte-identical files: ``{index: index of its first copy}`` for every later copy.

    Only files whose size another file shares are hashed (SHA-1), unless ``content``
    gives each file's (size, mtime_ns, sha1) already (``file_content``).  The first
    copy of a group is its first index with ``prefer`` set (an image already
    labelled as an original), else its first index.  Unreadable files are
    never duplicates (the crop stage records them)."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        if content is not None:
            if content[i][2] is not None:
                by_size[content[i][0]].append(i)
            continue
        try:
            by_size[os.stat(p).st_size].append(i)
        except OSError:
            continue
    out: dict[int, int] = {}
    for size, group in by_size.items():
        if len(group) < 2:
            continue
        by_hash: dict[str, list[int]] = defaultdict(list)
        for i in group:
            digest = content[i][2] if content is not None else file_sha1(paths[i])
            if digest is not None:
                by_hash[digest].append(i)
        for same in by_hash.values():
            if len(same) < 2:
                continue
            first = next((i for i in same if prefer and prefer[i]), same[0])
            out.update({i: first for i in same if i != first})
    return out


def _previous(path: Path) -> tuple[dict[str, str], set[str], dict[str, tuple]]:
    """The previous manifest's shards by image id, its originals (not duplicates), and each
    image's (size, mtime_ns, sha1) ({} for a manifest written before those columns)."""
    if not Path(path).is_file():
        return {}, set(), {}
    names = pq.read_schema(path).names
    cols = ["image_id", "shard"] + [c for c in ("duplicate_of", *CONTENT_COLUMNS) if c in names]
    old = read_table(path, cols).to_pydict()
    dupes = old.get("duplicate_of") or [None] * len(old["image_id"])
    originals = {iid for iid, d in zip(old["image_id"], dupes) if d is None}
    content = {}
    if all(c in old for c in CONTENT_COLUMNS):
        content = dict(zip(old["image_id"], zip(*(old[c] for c in CONTENT_COLUMNS))))
    return dict(zip(old["image_id"], old["shard"])), originals, content


def _skipped_hint(skipped: dict[str, list[str]]) -> str:
    if not skipped:
        return ""
    kinds = ", ".join(f"{k}: {len(v)}" for k, v in skipped.items())
    return f" (it holds files of kinds it does not read: {kinds})"


def _examples(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def build_manifest(settings: Settings, previous: Path | None = None) -> pa.Table:
    """Scan every source, assign splits and sticky shards, write the manifest.

    A row's ``dataset`` is its source id and its ``path`` is relative to that
    source's root; ``image_id`` is ``<source id>/<path>``.  The returned table
    carries the file's metadata: ``skipped`` (JSON ``{kind: count}``),
    ``duplicates``, ``escaped_names`` and ``notes`` (JSON list of one-line
    messages, also logged as warnings; see ``manifest_notes``).
    """
    prev_path = previous or settings.manifest_path
    old_shards, old_originals, old_content = _previous(prev_path)
    rows, files, content = [], [], []
    changed: list[str] = []
    notes: list[str] = []
    skipped_total: Counter = Counter()
    skipped_by_source: dict[str, dict[str, int]] = {}
    escaped: list[str] = []
    for source in settings.sources:
        split_cfg = source.split
        outside: list[tuple[str, str]] = []
        scanned = _scanned(settings, source, outside)
        if outside:
            examples = _examples([f"{p!r} ({why})" for p, why in outside], 2)
            notes.append(
                f"manifest: left out {len(outside)} entr{'ies' if len(outside) != 1 else 'y'} of source {source.id!r} "
                f"whose path is not inside its root {utf8_text(str(source.root))} (e.g. {examples}); "
                f"give {'them' if len(outside) != 1 else 'it'} a path relative to the root in the data set's labels")
        unreadable = unreadable_folders(source.root) if source.root.is_dir() else []
        if unreadable:
            notes.append(
                f"manifest: cannot list {len(unreadable)} folder{'s' if len(unreadable) != 1 else ''} under "
                f"{utf8_text(str(source.root))} ({_examples([utf8_text(u) for u in unreadable])}); "
                f"{'their' if len(unreadable) != 1 else 'its'} images are not in the manifest; make "
                f"{'them' if len(unreadable) != 1 else 'it'} readable (chmod u+rx) or move "
                f"{'them' if len(unreadable) != 1 else 'it'} out of the data root")
        skipped = skipped_files(source.root, (it.path for it in scanned))
        if skipped:
            counts = {k: len(v) for k, v in skipped.items()}
            skipped_by_source[source.id] = counts
            skipped_total.update(counts)
            names = [utf8_text(n) for v in skipped.values() for n in v]
            supported = ", ".join(sorted(image_suffixes()))
            notes.append(
                f"manifest: skipped {len(names)} file{'s' if len(names) != 1 else ''} under "
                f"{utf8_text(str(source.root))} that {'are' if len(names) != 1 else 'is'} not an image kind it reads "
                f"({', '.join(f'{k}: {n}' for k, n in counts.items())}; e.g. {_examples(names)}); to include "
                f"{'them' if len(names) != 1 else 'it'}, convert to JPEG or PNG, or give an image without a suffix "
                f"its suffix (it reads {supported})")
        taken: set[str] = set()
        for it in sorted(_limited(settings, source, scanned), key=lambda i: i.path):
            path, raw = display_name(it.path)
            image_id = f"{source.id}/{path}"
            if image_id in taken:  # an escaped name equal to a real one: keep ids unique
                image_id = f"{image_id}#{hashlib.sha1(raw or b'').hexdigest()[:8]}"
            taken.add(image_id)
            if raw is not None:
                escaped.append(image_id)
            subject = utf8_text(it.subject) or image_id
            split = it.split or assign_split(subject, settings.seed, split_cfg.test, split_cfg.val)
            before = old_content.get(image_id)
            size, mtime_ns, sha1 = file_content(source.root / it.path, before)
            if before is not None and before[2] is not None and sha1 != before[2]:
                changed.append(image_id)
            rows.append(dict(image_id=image_id, dataset=source.id, path=path, subject=subject,
                             age=it.age, age_std=it.age_std, age_group=utf8_text(it.age_group),
                             split=split, fold=it.fold, shard=old_shards.get(image_id),
                             path_bytes=raw, duplicate_of=None, size=size, mtime_ns=mtime_ns, sha1=sha1))
            files.append(source.root / it.path)
            content.append((size, mtime_ns, sha1))
    if escaped:
        notes.append(
            f"manifest: {len(escaped)} file name{'s are' if len(escaped) != 1 else ' is'} not valid UTF-8 "
            f"(e.g. {_examples(escaped)}); recorded with \\xNN escapes and read under the real name; "
            f"rename {'them' if len(escaped) != 1 else 'it'} to UTF-8 for readable ids")
    # byte-identical copies: the later copy follows the first copy's split and is not labelled
    dupes = find_duplicates(files, [r["image_id"] in old_originals for r in rows], content)
    for i, first in sorted(dupes.items()):
        orig = rows[first]
        rows[i].update(duplicate_of=orig["image_id"], split=orig["split"], fold=orig["fold"])
    if changed:
        log.info("manifest: %d image(s) changed content since the last manifest (e.g. %s); their shards are "
                 "cropped and labelled again", len(changed), _examples(changed))
    if dupes:
        pairs = [f"{rows[i]['image_id']} = {rows[j]['image_id']}" for i, j in sorted(dupes.items())]
        notes.append(
            f"manifest: {len(dupes)} file{'s are' if len(dupes) != 1 else ' is'} a byte-identical copy of another "
            f"(e.g. {_examples(pairs, 2)}); {'each' if len(dupes) != 1 else 'it'} takes the first copy's split "
            f"and is not labelled again (crop status 'duplicate'); delete the copies to silence this")
    # new images go to new shards after the highest existing one
    used = [shard_index(s) for s in set(old_shards.values())]
    next_index = max(used) + 1 if used else 0
    fresh = [r for r in rows if r["shard"] is None]
    for k, row in enumerate(fresh):
        row["shard"] = shard_id(next_index + k // settings.shard_size)
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    metadata = {"dataset": ",".join(s.id for s in settings.sources),
                "root": ",".join(utf8_text(str(s.root)) for s in settings.sources),
                "skipped": json.dumps(dict(sorted(skipped_total.items()))),
                "skipped_by_source": json.dumps(skipped_by_source),
                "duplicates": str(len(dupes)),
                "escaped_names": str(len(escaped)),
                "changed": str(len(changed)),
                "notes": json.dumps(notes)}
    write_table(table, settings.manifest_path, metadata)
    for line in notes:
        log.warning("%s", line)
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in metadata.items()})
    return table.replace_schema_metadata(merged)


def manifest_notes(settings_or_path: Settings | Path) -> list[str]:
    """The manifest's one-line messages (skipped files by kind, duplicates,
    non-UTF-8 names), for the CLI or a UI to print; [] when there is nothing to say."""
    path = Path(getattr(settings_or_path, "manifest_path", settings_or_path))
    raw = table_metadata(path).get("notes") if Path(path).is_file() else None
    return list(json.loads(raw)) if raw else []
