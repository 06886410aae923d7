"""Stage 3: the label table (this project's VMAGE): one row per labelled face.

Columns: ``image_id``, ``face``, ``dataset``, ``split``, ``teacher_age``,
``probs`` (101 floats, ages 0..100), ``member_ages``, ``age_spread``,
``entropy``, ``gated`` (children members decided), ``gt_age`` / ``gt_group`` (ground truth when the data set has it),
``age_group`` (SPEC 5 band of the teacher's age, ``ages.AGE_BANDS``).  Also the checks that guard it.
Reading the table back (one split joined with its crops) is ``agedistill_core.labeltable``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agedistill_core.ages import BAND_LABELS, age_band, band_of_label
from agedistill_core.errors import DataError
from agedistill_core.labeltable import USABLE, manifest_crops, manifest_table, require_shards
from agedistill_core.settings import Settings
from agedistill_core.shards import join_columns, read_shards, shard_path, table_metadata, write_table


def build_vmage(settings: Settings) -> pa.Table:
    """Join the labels of the manifest's shards with the manifest (inner: a face
    whose image is no longer in the manifest is not in the table)."""
    manifest, shards = manifest_table(settings)
    teacher = settings.section_hash("teacher")
    # labels must be of the crops now on disk, by the teacher now configured (reading
    # the versions first also moves unreadable shard files aside: they count as missing)
    versions = {}
    for sid in shards:
        crops_path, labels_path = shard_path(settings.crops_dir, sid), shard_path(settings.labels_dir, sid)
        crops_version = table_metadata(crops_path).get("version", "?") if crops_path.is_file() else "?"
        labels_version = table_metadata(labels_path).get("version") if labels_path.is_file() else None
        versions[sid] = (f"{crops_version}-{teacher}", labels_version)
    require_shards(settings.labels_dir, shards, "`agedistill label`")
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
    table = table.append_column("age_group", pa.array(age_band(table["teacher_age"].to_numpy()), pa.string()))
    cols = ["image_id", "face", "dataset", "split", "teacher_age", "probs", "member_ages", "age_spread",
            "entropy", "gated", "gt_age", "gt_group", "age_group"]
    table = table.select(cols)
    write_table(table, settings.vmage_path, {"version": settings.section_hash("dataset", "faces", "teacher")})
    return table


def summarize(table: pa.Table, crops: pa.Table | None = None) -> dict:
    """Count, age-group histogram, split sizes and crop statuses."""
    hist = {g: 0 for g in BAND_LABELS}
    for d in pc.value_counts(table["age_group"]).to_pylist():  # a table written before ages.MAX_AGE says 61-100
        band = band_of_label(d["values"])
        hist[band] = hist.get(band, 0) + int(d["counts"])
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
