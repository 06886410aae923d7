"""Atomic, safely loadable training checkpoints.

A checkpoint is a plain dict saved with ``torch.save`` that loads with
``torch.load(weights_only=True)``: state dicts, ints, floats, strings, lists,
dicts and tensors only.  RNG states of numpy and ``random`` are converted to
tensors / ints so that safe loading accepts them.

Keys: ``format``, ``version``, ``model``, ``optimizer``, ``scheduler``
(``None`` when not given), ``epoch``, ``best_val``, ``config`` (JSON-able dict),
``rng`` and ``extra``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agedistill_core.errors import CheckpointError
from agedistill_core.shards import atomic_path

FORMAT = "agedistill-student-checkpoint"
VERSION = 1
_FIX = "delete it and retrain, or point --checkpoint at a valid file"


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _plain(config: dict) -> dict:
    """JSON round trip: Paths and other odd leaves become strings."""
    return json.loads(json.dumps(config, default=str))


def rng_state() -> dict:
    """The torch (CPU, and CUDA when present), numpy global and ``random`` states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(list(py_internal), dtype=torch.int64),
            "gauss_next": None if py_gauss is None else float(py_gauss),
        },
        "cuda": None,
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(
    path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    epoch: int,
    best_val: float,
    config: dict,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": unwrap_model(model).state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": int(epoch),
        "best_val": float(best_val),
        "config": _plain(config or {}),
        "rng": rng_state(),
        "extra": _plain(extra) if extra is not None else None,
    }
    _atomic_torch_save(ckpt, path)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``; anything wrong raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; train first, or point --checkpoint at a valid file"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, random bytes, unsafe pickle, ...
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text or "unsupported global" in text:
            raise CheckpointError(
                f"checkpoint {path} was refused: it holds Python objects, not only tensors and plain data, "
                f"and loading it could run code; use a checkpoint written by agedistill ({_FIX})"
            ) from None
        msg = " ".join(text.split())
        msg = msg if len(msg) <= 160 else msg[:157].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {msg}); {_FIX}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an agedistill student checkpoint; {_FIX}")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {ckpt.get('version')!r}, this code reads {VERSION}; {_FIX}"
        )
    missing = [k for k in ("model", "epoch", "best_val", "config", "rng") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; {_FIX}")
    return ckpt


def load_into(ckpt: dict, *, model: torch.nn.Module, optimizer=None, scheduler=None) -> None:
    """Load the saved states into (possibly wrapped) model, optimizer, scheduler."""
    unwrap_model(model).load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])


def restore_rng(ckpt: dict) -> None:
    """Restore the torch, numpy global and ``random`` states saved in ``ckpt``."""
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"].cpu().to(torch.uint8))
    n = rng["numpy"]
    np.random.set_state((
        n["kind"],
        n["keys"].cpu().numpy().astype(np.uint32),
        int(n["pos"]),
        int(n["has_gauss"]),
        float(n["cached_gaussian"]),
    ))
    p = rng["python"]
    random.setstate((int(p["version"]), tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    cuda = rng.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda])


def save_half(src, dst) -> Path:
    """A checkpoint's weights in float16, nothing to resume with: a teacher member kept in git.

    Half the size of ``best.pt`` (mn3_small: 3 MB instead of 6); ``load_student`` loads it
    into the float32 network (``load_state_dict`` casts), so inference runs as before with
    weights rounded to 11 significant bits (the ages move by hundredths of a year).  A tensor
    that float16 cannot hold (over 65504: mn3_small's first BatchNorm running variance) stays
    float32.
    """
    ckpt = load_checkpoint(src)

    def small(v):
        if not (torch.is_tensor(v) and v.is_floating_point()):
            return v
        h = v.half()
        return h if bool(torch.isfinite(h).all()) else v

    half = {k: small(v) for k, v in ckpt["model"].items()}
    slim = {**{k: ckpt[k] for k in ("format", "version", "epoch", "best_val", "config", "rng")},
            "model": half, "optimizer": None, "scheduler": None,
            "extra": {**(ckpt.get("extra") or {}), "weights": "float16", "source": Path(src).parent.name}}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        torch.save(slim, tmp)
    return dst
