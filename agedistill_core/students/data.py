"""Training data: face crops with the targets a student learns, batched fast.

``load_split`` joins the label table with the crops for one split (optionally
only some sources).  ``FaceDataset`` decodes every crop once, straight to the
network's input size, into one uint8 array (``N x S x S x 3``: 28 kB a face at
96 px), so an epoch costs only augmentation: one small affine warp per face.
``FaceDataset.batch`` builds a whole batch as a float tensor in channels-last
memory (the layout the uint8 array already has), and ``iter_batches`` prepares
the next batch in a thread while the model trains on the current one.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

from agedistill_core.crops import USABLE
from agedistill_core.errors import DataError, UnreadableImage
from agedistill_core.images import decode_image
from agedistill_core.settings import Settings
from agedistill_core.shards import join_columns, read_table
from agedistill_core.vmage import manifest_crops
from agedistill_core.students.augment import VGGFACE2_MEAN_RGB, AugmentConfig, apply_params, sample_params


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
    vmage = read_table(settings.vmage_path, ["image_id", "face", "dataset", "split", "teacher_age", "probs",
                                             "age_spread", "gt_age"])
    vmage = vmage.filter(pc.equal(vmage["split"], split))
    if sources:
        vmage = vmage.filter(pc.is_in(vmage["dataset"], pa.array(list(sources), pa.string())))
    if label_source == "ground_truth":
        vmage = vmage.filter(pc.is_valid(vmage["gt_age"]))
    crops = manifest_crops(settings, ["image_id", "face", "jpeg", "status"])
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
        source=table["dataset"].to_pylist(),
    )


def decode_at_size(jpeg: bytes, name: str, size: int) -> np.ndarray:
    """One crop decoded and resized to ``size`` (bilinear: the evaluation framing)."""
    img = decode_image(jpeg, name)
    if img.shape[0] != img.shape[1]:
        raise UnreadableImage(f"{name}: crop is {img.shape[1]}x{img.shape[0]}, not square")
    if img.shape[0] != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return img


def decode_all(faces: FaceSet, size: int, threads: int = 2) -> np.ndarray:
    """Every crop of ``faces`` at ``size`` in one uint8 array (threads: OpenCV releases the GIL)."""
    out = np.empty((len(faces), size, size, 3), np.uint8)

    def work(i: int) -> None:
        out[i] = decode_at_size(faces.jpeg[i], faces.image_id[i], size)

    if threads > 1 and len(faces) > 64:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(len(faces)), chunksize=256))
    else:
        for i in range(len(faces)):
            work(i)
    return out


_MEAN = torch.tensor(VGGFACE2_MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)


def batch_tensor(images: np.ndarray, channels_last: bool = True) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 -> float32 ``(N, 3, S, S)`` minus the VGGFace2 mean.

    Channels-last keeps the uint8 array's own layout (no transposing copy);
    otherwise the result is contiguous NCHW.  Values are the same either way.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (x.to(torch.float32, memory_format=fmt) - _MEAN).contiguous(memory_format=fmt)


class FaceDataset(Dataset):
    """Faces at the input size, augmented per item; deterministic per (seed, epoch, index).

    Each crop is decoded and resized to ``size`` once (``decode_all``) and
    augmented from there: the warp of SPEC augmentation is applied to the
    input-size image, whose geometry (face box centred, ``margin`` around it)
    is the stored crop's.  Without augmentation an item is exactly the
    bilinear resize that evaluation and ``predict`` use.
    """

    def __init__(self, faces: FaceSet, size: int, margin: float, augment: AugmentConfig, seed: int = 0,
                 *, threads: int = 2, channels_last: bool = True, images: np.ndarray | None = None):
        if len(faces) == 0:
            raise DataError("no faces in this split; check the split sizes, students.sources and the label table")
        self.faces, self.size, self.margin, self.augment, self.seed = faces, size, margin, augment, seed
        self.channels_last = channels_last
        self.epoch = 0
        self.images = images if images is not None else decode_all(faces, size, threads)
        self.probs = (faces.target_probs if faces.target_probs is not None
                      else np.zeros((len(faces), 101), np.float32))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.faces)

    def image(self, i: int) -> np.ndarray:
        """Face ``i`` as the network sees it this epoch, uint8 ``(S, S, 3)``."""
        if not self.augment.enabled:
            return self.images[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        return apply_params(self.images[i], self.size, self.margin, sample_params(rng, self.augment))

    def __getitem__(self, i: int):
        f = self.faces
        return self.image(i), np.float32(f.target_age[i]), self.probs[i], np.float32(f.age_spread[i])

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Faces ``idx`` as ``(x, age, probs, spread)`` tensors."""
        idx = np.asarray(idx, np.int64)
        if self.augment.enabled:
            imgs = np.empty((len(idx), self.size, self.size, 3), np.uint8)
            for k, i in enumerate(idx):
                imgs[k] = self.image(int(i))
        else:
            imgs = self.images[idx]
        f = self.faces
        return (batch_tensor(imgs, self.channels_last), torch.from_numpy(f.target_age[idx].astype(np.float32)),
                torch.from_numpy(self.probs[idx]), torch.from_numpy(f.age_spread[idx].astype(np.float32)))


class _Batches(Dataset):
    """Batches as items, for DataLoader worker processes (``students.workers`` > 0)."""

    def __init__(self, ds: FaceDataset, idx: np.ndarray, batch_size: int):
        self.ds, self.idx, self.bs = ds, idx, batch_size

    def __len__(self) -> int:
        return (len(self.idx) + self.bs - 1) // self.bs

    def __getitem__(self, k: int):
        return self.ds.batch(self.idx[k * self.bs:(k + 1) * self.bs])


def quiet_opencv_threads() -> None:
    """One OpenCV thread: each warp is a 96-224 px image, where OpenCV's own thread pool costs
    more than it saves and competes with torch's threads (measured: 57 vs 75 us a warp)."""
    cv2.setNumThreads(1)


def iter_batches(ds: FaceDataset, idx: np.ndarray, batch_size: int, workers: int = 0,
                 prefetch: bool = True) -> Iterator[tuple[torch.Tensor, ...]]:
    """Batches of ``idx`` in order; the next one is built while the caller uses this one.

    ``workers`` > 0 builds them in DataLoader worker processes instead of a thread.
    """
    idx = np.asarray(idx, np.int64)
    chunks = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    if workers > 0:
        loader = torch.utils.data.DataLoader(_Batches(ds, idx, batch_size), batch_size=None, shuffle=False,
                                             num_workers=workers)
        yield from loader
        return
    if not prefetch or len(chunks) < 2:
        for c in chunks:
            yield ds.batch(c)
        return
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(ds.batch, chunks[0])
        for k in range(len(chunks)):
            current = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(ds.batch, chunks[k + 1])
            yield current


def collate(items):
    """Stack ``FaceDataset`` items into tensors (for a plain DataLoader over the dataset)."""
    imgs, ages, probs, spread = zip(*items)
    return (batch_tensor(np.stack(imgs)), torch.tensor(np.array(ages)), torch.from_numpy(np.stack(probs)),
            torch.tensor(np.array(spread)))
