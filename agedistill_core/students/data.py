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

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from agedistill_core.errors import DataError, UnreadableImage
from agedistill_core.images import decode_image, resize_input
from agedistill_core.labeltable import FaceSet
from agedistill_core.students.augment import AugmentConfig, apply_params, batch_tensor, sample_params


def decode_at_size(jpeg: bytes, name: str, size: int, resize: str = "bilinear") -> np.ndarray:
    """One crop decoded and resized to ``size`` by the student's ``resize`` rule (what evaluation
    and ``predict`` do: ``images.resize_input``)."""
    img = decode_image(jpeg, name)
    if img.shape[0] != img.shape[1]:
        raise UnreadableImage(f"{name}: crop is {img.shape[1]}x{img.shape[0]}, not square")
    return resize_input(img, size, resize)


def decode_all(faces: FaceSet, size: int, threads: int = 2, resize: str = "bilinear") -> np.ndarray:
    """Every crop of ``faces`` at ``size`` in one uint8 array (threads: OpenCV releases the GIL)."""
    out = np.empty((len(faces), size, size, 3), np.uint8)

    def work(i: int) -> None:
        out[i] = decode_at_size(faces.jpeg[i], faces.image_id[i], size, resize)

    if threads > 1 and len(faces) > 64:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(len(faces)), chunksize=256))
    else:
        for i in range(len(faces)):
            work(i)
    return out


class FaceDataset(Dataset):
    """Faces at the input size, augmented per item; deterministic per (seed, epoch, index).

    Each crop is decoded and resized to ``size`` once (``decode_all``) and
    augmented from there: the warp of SPEC augmentation is applied to the
    input-size image, whose geometry (face box centred, ``margin`` around it)
    is the stored crop's.  Without augmentation an item is exactly the
    resize (``resize``: the student's rule) that evaluation and ``predict`` use.
    """

    def __init__(self, faces: FaceSet, size: int, margin: float, augment: AugmentConfig, seed: int = 0,
                 *, threads: int = 2, channels_last: bool = True, images: np.ndarray | None = None,
                 resize: str = "bilinear"):
        if len(faces) == 0:
            raise DataError("no faces in this split; check the split sizes, students.sources and the label table")
        self.faces, self.size, self.margin, self.augment, self.seed = faces, size, margin, augment, seed
        self.channels_last = channels_last
        self.epoch = 0
        self.images = images if images is not None else decode_all(faces, size, threads, resize)
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
