"""Training data: face crops (JPEG bytes) with the targets a student learns."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

from agedistill_core.crops import USABLE
from agedistill_core.errors import DataError
from agedistill_core.images import decode_image
from agedistill_core.settings import Settings
from agedistill_core.shards import join_columns, read_shards, read_table
from agedistill_core.students.augment import AugmentConfig, augment_face, to_tensor


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

    def __len__(self) -> int:
        return len(self.jpeg)

    def subset(self, idx: np.ndarray) -> "FaceSet":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return FaceSet([self.image_id[i] for i in idx], [self.jpeg[i] for i in idx], self.target_age[idx],
                       pick(self.target_probs), self.age_spread[idx], self.teacher_age[idx], self.gt_age[idx])


def load_split(settings: Settings, split: str, label_source: str = "teacher") -> FaceSet:
    """Join the label table with the crops for one split."""
    vmage = read_table(settings.vmage_path, ["image_id", "face", "split", "teacher_age", "probs",
                                             "age_spread", "gt_age"])
    vmage = vmage.filter(pc.equal(vmage["split"], split))
    if label_source == "ground_truth":
        vmage = vmage.filter(pc.is_valid(vmage["gt_age"]))
    crops = read_shards(settings.crops_dir, ["image_id", "face", "jpeg", "status"])
    crops = crops.filter(pc.is_in(crops["status"], pa.array(USABLE))).drop_columns(["status"])
    table = join_columns(vmage, crops, ["image_id", "face"], ["jpeg"], how="inner").sort_by("image_id")
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
    )


class FaceDataset(Dataset):
    """Decodes and augments one face per item; deterministic per (seed, epoch, index).

    ``cache_decoded`` keeps each decoded crop as a uint8 array after its first
    use (S x S x 3 bytes a face: ~77 kB at 160 px), so later epochs only
    augment.  With DataLoader workers each worker holds its own cache.
    """

    def __init__(self, faces: FaceSet, size: int, margin: float, augment: AugmentConfig, seed: int = 0,
                 cache_decoded: bool = False):
        if len(faces) == 0:
            raise DataError("no faces in this split; check the split sizes and the label table")
        self.faces, self.size, self.margin, self.augment, self.seed = faces, size, margin, augment, seed
        self.epoch = 0
        self.cache: dict[int, np.ndarray] | None = {} if cache_decoded else None

    def decoded(self, i: int) -> np.ndarray:
        if self.cache is None:
            return decode_image(self.faces.jpeg[i], self.faces.image_id[i])
        img = self.cache.get(i)
        if img is None:
            img = self.cache[i] = decode_image(self.faces.jpeg[i], self.faces.image_id[i])
        return img

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int):
        f = self.faces
        rng = np.random.default_rng([self.seed, self.epoch, i])
        img = augment_face(self.decoded(i), self.size, self.margin, rng, self.augment)
        probs = f.target_probs[i] if f.target_probs is not None else np.zeros(101, np.float32)
        return img, np.float32(f.target_age[i]), probs, np.float32(f.age_spread[i])


def collate(items):
    imgs, ages, probs, spread = zip(*items)
    return (to_tensor(np.stack(imgs)), torch.tensor(np.array(ages)), torch.from_numpy(np.stack(probs)),
            torch.tensor(np.array(spread)))
