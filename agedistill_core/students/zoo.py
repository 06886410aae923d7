"""The five students of SPEC section 4, built with timm.

Each entry says which timm model, at which input size, with which batch size
and learning rate the protocol trains it.  Add a student with one more
``register_student`` call.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from agedistill_core.registry import Registry


@dataclass(frozen=True)
class StudentSpec:
    name: str
    timm_name: str
    input_size: int
    batch_size: int
    lr: float


STUDENTS: Registry[StudentSpec] = Registry("student")


def register_student(spec: StudentSpec) -> StudentSpec:
    return STUDENTS.register(spec.name)(spec)


register_student(StudentSpec("vgg16", "vgg16", 224, 128, 0.00005))  # no batch norm: tiny lr
register_student(StudentSpec("senet50", "legacy_seresnet50", 224, 128, 0.005))
register_student(StudentSpec("densenet121", "densenet121", 224, 128, 0.005))
register_student(StudentSpec("mn3_large", "mobilenetv3_large_100", 224, 256, 0.005))
register_student(StudentSpec("mn3_small", "mobilenetv3_small_100", 96, 256, 0.005))


def find_pretrained(spec: StudentSpec, pretrained_dir: str | Path | None) -> Path | None:
    """Local ImageNet weights for ``spec``: ``<dir>/<timm_name>.{safetensors,pth,bin}``."""
    if not pretrained_dir:
        return None
    for ext in (".safetensors", ".pth", ".bin"):
        cand = Path(pretrained_dir).expanduser() / f"{spec.timm_name}{ext}"
        if cand.is_file():
            return cand
    return None


def create_student(name: str, n_outputs: int = 1, pretrained_dir: str | Path | None = None, *,
                   warm_start: bool = False) -> nn.Module:
    """A timm model with an ``n_outputs`` head; ImageNet weights when found locally.

    ``warm_start``: the caller loads a trained student's weights next, so missing ImageNet
    weights are neither looked for nor warned about."""
    import timm

    spec = STUDENTS.get(name)
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=n_outputs)
    if warm_start:
        return model
    weights = find_pretrained(spec, pretrained_dir)
    if weights is None:
        warnings.warn(
            f"student {name}: no local ImageNet weights ({spec.timm_name}.safetensors in "
            f"students.pretrained_dir={pretrained_dir!r}); training from scratch", stacklevel=2)
        return model
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    own = model.state_dict()
    # the ImageNet classifier (1000 outputs) does not fit our head: keep ours
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(state, strict=False)
    return model
