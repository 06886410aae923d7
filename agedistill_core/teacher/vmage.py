"""Stage 3: the label table (this project's VMAGE): one row per labelled face.

Columns: ``image_id``, ``face``, ``dataset``, ``split``, ``teacher_age``,
``probs`` (101 floats, ages 0..100), ``member_ages``, ``age_spread``,
``entropy``, ``gated`` (children members decided), ``gt_age`` / ``gt_group`` (ground truth when the data set has it),
``age_group`` (SPEC group of the teacher's age).  Also the checks that guard it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agedistill_core.faces.crops import USABLE
from agedistill_core.settings import Settings
from agedistill_core.errors import DataError
from agedistill_core.evaluate.metrics import SPEC_GROUPS, age_group, group_label
from agedistill_core.shards import join_columns, read_shards, read_table, shard_path, table_metadata, write_table

def _manifest(settings: Settings) -> tuple[pa.Table, list[str]]:
    manifest = read_table(settings.manifest_path, ["image_id", "dataset", "split", "age", "age_group", "shard"])
    return manifest, sorted(pc.unique(manifest["shard"]).to_pylist())


def _require(folder, shards: list[str], fix: str) -> None:
    missing = [str(shard_path(folder, s)) for s in shards if not shard_path(folder, s).is_file()]
    if missing:
        few = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{few} missing (the manifest has {'this shard' if len(missing) == 1 else 'these shards'}); "
                        f"run {fix} first")


def manifest_crops(settings: Settings, columns: list[str] | None = None) -> pa.Table:
    """The crop rows of the images in the current manifest (only its shards are read;
    rows of images no longer in it, and shard files of other manifests, are ignored)."""
    manifest, shards = _manifest(settings)
    _require(settings.crops_dir, shards, "`agedistill crops`")
    cols = list(dict.fromkeys(["image_id", *(columns or CROP_COLUMNS)]))
    crops = read_shards(settings.crops_dir, cols, shards=shards)
    crops = crops.filter(pc.is_in(crops["image_id"], value_set=manifest["image_id"]))
    return crops.select(columns or CROP_COLUMNS)


CROP_COLUMNS = ["image_id", "face", "status"]


def build_vmage(settings: Settings) -> pa.Table:
    """Join the labels of the manifest's shards with the manifest (inner: a face
    whose image is no longer in the manifest is not in the table)."""
    manifest, shards = _manifest(settings)
    teacher = settings.section_hash("teacher")
    # labels must be of the crops now on disk, by the teacher now configured (reading
    # the versions first also moves unreadable shard files aside: they count as missing)
    versions = {}
    for sid in shards:
        crops_path, labels_path = shard_path(settings.crops_dir, sid), shard_path(settings.labels_dir, sid)
        crops_version = table_metadata(crops_path).get("version", "?") if crops_path.is_file() else "?"
        labels_version = table_metadata(labels_path).get("version") if labels_path.is_file() else None
        versions[sid] = (f"{crops_version}-{teacher}", labels_version)
    _require(settings.labels_dir, shards, "`agedistill label`")
    stale = [sid for sid, (want, have) in versions.items() if want != have]
    if stale:
        few = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise DataError(f"labels of {few} in {settings.labels_dir} were not made from the current crops "
                        f"with the current teacher settings; run `agedistill label` first")
    labels = read_shards(settings.labels_dir, ["image_id", "face", "age", "probs", "member_ages",
                                                "age_spread", "entropy", "gated"], shards=shards)
    manifest = manifest.select(["image_id", "dataset", "split", "age", "age_group"])
    manifest = manifest.rename_columns(["image_id", "dataset", "split", "gt_age", "gt_group"])
    table = labels.rename_columns(["image_id", "face", "teacher_age", "probs", "member_ages",
                                   "age_spread", "entropy", "gated"])
    table = join_columns(table, manifest, ["image_id"], ["dataset", "split", "gt_age", "gt_group"], how="inner")
    table = table.sort_by([("image_id", "ascending"), ("face", "ascending")])
    table = table.append_column("age_group", pa.array(age_group(table["teacher_age"].to_numpy()), pa.string()))
    cols = ["image_id", "face", "dataset", "split", "teacher_age", "probs", "member_ages", "age_spread",
            "entropy", "gated", "gt_age", "gt_group", "age_group"]
    table = table.select(cols)
    write_table(table, settings.vmage_path, {"version": settings.section_hash("dataset", "faces", "teacher")})
    return table


def summarize(table: pa.Table, crops: pa.Table | None = None) -> dict:
    """Count, age-group histogram, split sizes and crop statuses."""
    groups = [group_label(*g) for g in SPEC_GROUPS]
    hist = {g: 0 for g in groups}
    for d in pc.value_counts(table["age_group"]).to_pylist():
        hist[d["values"]] = int(d["counts"])
    splits = {d["values"]: int(d["counts"]) for d in pc.value_counts(table["split"]).to_pylist()}
    out = {"faces": table.num_rows, "age_groups": hist, "splits": splits}
    if table.num_rows:
        ages = table["teacher_age"].to_numpy()
        out["teacher_age_mean"] = float(ages.mean())
        gt = table["gt_age"].to_numpy(zero_copy_only=False)
        ok = ~np.isnan(gt.astype(np.float64))
        if ok.any():
            out["teacher_mae_to_ground_truth"] = float(np.abs(ages[ok] - gt[ok]).mean())
    if crops is not None:
        out["crop_status"] = {d["values"]: int(d["counts"]) for d in pc.value_counts(crops["status"]).to_pylist()}
    return out


def per_source(table: pa.Table, manifest: pa.Table, crops: pa.Table) -> dict:
    """Per source (the manifest's ``dataset``): images, crop statuses, labelled faces and
    the teacher's MAE to ground truth (None where the source has no ground truth)."""
    source_of = dict(zip(manifest["image_id"].to_pylist(), manifest["dataset"].to_pylist()))
    out: dict[str, dict] = {}
    for src in dict.fromkeys(manifest["dataset"].to_pylist()):
        out[src] = {"images": 0, "status": {}, "labelled": 0, "teacher_mae": None}
    for src in source_of.values():
        out[src]["images"] += 1
    for iid, status in zip(crops["image_id"].to_pylist(), crops["status"].to_pylist()):
        row = out[source_of[iid]]["status"]
        row[status] = row.get(status, 0) + 1
    sources = table["dataset"].to_pylist()
    ages = table["teacher_age"].to_numpy()
    gt = table["gt_age"].to_numpy(zero_copy_only=False).astype(np.float64)
    for src, row in out.items():
        mine = np.array([s == src for s in sources], bool)
        row["labelled"] = int(mine.sum())
        ok = mine & np.isfinite(gt)
        row["teacher_mae"] = float(np.abs(ages[ok] - gt[ok]).mean()) if ok.any() else None
    return out


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    value: float = 0.0      # the measured number (bad rows, worst error, count gap): 0 when it passes exactly


def check_vmage(table: pa.Table, crops: pa.Table) -> list[CheckResult]:
    """The label table's invariants, as plain results a test or Dagster can report."""
    results = []
    ages = table["teacher_age"].to_numpy()
    bad = int(((ages < 0) | (ages > 100) | ~np.isfinite(ages)).sum())
    results.append(CheckResult("ages_in_range", bad == 0, f"{bad} ages outside [0, 100]", bad))
    probs = np.asarray(table["probs"].combine_chunks().flatten().to_numpy()).reshape(-1, 101)
    sums = probs.sum(1) if len(probs) else np.zeros(0)
    worst = float(np.abs(sums - 1).max()) if len(sums) else 0.0
    results.append(CheckResult("vectors_sum_to_one", worst < 1e-3, f"max |sum - 1| = {worst:.2e}", worst))
    keys = pc.binary_join_element_wise(table["image_id"], pc.cast(table["face"], pa.string()), "#")
    dupes = table.num_rows - len(pc.unique(keys))
    results.append(CheckResult("unique_ids", dupes == 0, f"{dupes} duplicate (image_id, face) rows", dupes))
    usable = int(pc.sum(pc.is_in(crops["status"], pa.array(USABLE))).as_py() or 0)
    results.append(CheckResult("counts_match_crops", usable == table.num_rows,
                               f"{table.num_rows} labelled faces vs {usable} usable crops",
                               table.num_rows - usable))
    return results


def sources_markdown(per: dict) -> str:
    """The per-source summary (``per_source``) as a Markdown table: faces, statuses, teacher MAE."""
    statuses = sorted({k for row in per.values() for k in row["status"]})
    lines = ["| source | images | labelled | " + " | ".join(statuses) + " | teacher MAE to real age |",
             "|---|---|---|" + "---|" * len(statuses) + "---|"]
    for src, row in per.items():
        mae_txt = "-" if row.get("teacher_mae") is None else f"{row['teacher_mae']:.2f}"
        lines.append(f"| {src} | {row['images']} | {row['labelled']} | "
                     + " | ".join(str(row["status"].get(k, 0)) for k in statuses) + f" | {mae_txt} |")
    return "\n".join(lines) + "\n"


# -- one split of the table, joined with its crops: what students learn and evaluation scores --

@dataclass
class FaceSet:
    """Parallel columns for one split: what a student sees and learns."""
    image_id: list[str]
    jpeg: list[bytes]
    target_age: np.ndarray          # (N,) teacher age or ground truth
    target_probs: np.ndarray | None  # (N, 101) teacher vector (None for ground truth)
    age_spread: np.ndarray          # (N,) teacher disagreement (0 for ground truth)
    teacher_age: np.ndarray         # (N,) the teacher's age (nan where unlabelled)
    gt_age: np.ndarray              # (N,) ground truth (nan where unknown)
    source: list[str] = field(default_factory=list)  # source id per face ([] = unknown)

    def __len__(self) -> int:
        return len(self.jpeg)

    def subset(self, idx: np.ndarray) -> "FaceSet":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return FaceSet([self.image_id[i] for i in idx], [self.jpeg[i] for i in idx], self.target_age[idx],
                       pick(self.target_probs), self.age_spread[idx], self.teacher_age[idx], self.gt_age[idx],
                       [self.source[i] for i in idx] if self.source else [])

    def fingerprint(self) -> str:
        """A short hash of which faces and which targets: a resume is refused when it changes."""
        h = hashlib.sha1()
        for iid in self.image_id:
            h.update(iid.encode("utf-8", "surrogateescape") + b"\0")
        h.update(np.round(np.nan_to_num(self.target_age, nan=-1.0), 3).astype(np.float32).tobytes())
        return h.hexdigest()[:16]


def load_split(settings: Settings, split: str, label_source: str = "teacher",
               sources: tuple[str, ...] | list[str] | None = None) -> FaceSet:
    """Join the label table with the crops for one split (only ``sources``, when given)."""
    return load_splits(settings, (split,), label_source, sources)[split]


def load_splits(settings: Settings, splits: tuple[str, ...] | list[str], label_source: str = "teacher",
                sources: tuple[str, ...] | list[str] | None = None) -> dict[str, FaceSet]:
    """``load_split`` for several splits, reading the crop shards once (training reads train and val)."""
    vmage = read_table(settings.vmage_path, ["image_id", "face", "dataset", "split", "teacher_age", "probs",
                                             "age_spread", "gt_age"])
    vmage = vmage.filter(pc.is_in(vmage["split"], pa.array(list(splits), pa.string())))
    if sources:
        vmage = vmage.filter(pc.is_in(vmage["dataset"], pa.array(list(sources), pa.string())))
    if label_source == "ground_truth":
        vmage = vmage.filter(pc.is_valid(vmage["gt_age"]))
    crops = manifest_crops(settings, ["image_id", "face", "jpeg", "status"])
    crops = crops.filter(pc.is_in(crops["status"], pa.array(USABLE))).drop_columns(["status"])
    joined = join_columns(vmage, crops, ["image_id", "face"], ["jpeg"], how="inner")
    return {split: _face_set(joined.filter(pc.equal(joined["split"], split)).sort_by("image_id"), label_source)
            for split in splits}


def _face_set(table: pa.Table, label_source: str) -> FaceSet:
    probs = np.asarray(table["probs"].combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, 101)
    teacher_age = table["teacher_age"].to_numpy().astype(np.float32)
    gt = table["gt_age"].to_numpy(zero_copy_only=False).astype(np.float32)
    teacher = label_source == "teacher"
    return FaceSet(
        image_id=table["image_id"].to_pylist(),
        jpeg=table["jpeg"].to_pylist(),
        target_age=teacher_age if teacher else gt,
        target_probs=probs if teacher else None,
        age_spread=table["age_spread"].to_numpy().astype(np.float32) if teacher else np.zeros(len(gt), np.float32),
        teacher_age=teacher_age,
        gt_age=gt,
        source=table["dataset"].to_pylist(),
    )
