"""Weights into models for training: a checkpoint read without running code from the file, the
EMA weights of one of ours (or a state dict as `dbrt export` reads it) loaded into a DBNet, and
the frozen teacher of a distillation run."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from engine.errors import ModelError
from engine.shapes import DEFAULT_MULTIPLES

from ..checkpoint import BN_COUNTER, load_file, normalise_keys, unwrap, validation_records


def read_validation_log(path) -> list:
    """The records of a run's val.jsonl. A last line cut short (the run was killed mid-append,
    the disk filled) is cut off, so the next record starts on a line of its own; any other line
    that is not a JSON object is skipped and said."""
    import sys

    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        path.write_text(text)
    return validation_records(text, lambda number: print(
        f"dbrt train: {path}, line {number}: not a validation record, skipped", file=sys.stderr))


def read_checkpoint(path) -> dict:
    """A checkpoint or bare state dict, loaded without running code from the file."""
    return load_file(path)


def load_weights(model, path) -> None:
    """Load "model" (EMA) weights of one of our checkpoints, or a state dict as `dbrt export`
    reads it (MhLiao/DB's `model.module.` keys, `{"state_dict": ...}` wrappers)."""
    state, _, _ = normalise_keys(unwrap(read_checkpoint(path), str(path)))
    own = model.state_dict()
    missing = sorted(k for k in set(own) - set(state) if not k.endswith(BN_COUNTER))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape"
                  f" (e.g. {(missing + unexpected + wrong)[0]})")
        raise ModelError(f"{path}: weights do not fit {getattr(model, 'arch_name', 'the model')}: "
                         f"{detail}; pass --arch / --width of the run that wrote them")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                          strict=False)  # only BatchNorm's batch counters may be absent


def network_of(saved, path, conf: Optional[dict] = None) -> dict:
    """{"arch", "width"} of the network a checkpoint holds: its training config says them
    (`conf`, default: the one saved in it), any other DBNet weights are read off their shapes."""
    from ..checkpoint import infer_architecture

    if conf is None:
        conf = saved.get("config") if isinstance(saved, dict) else None
    conf = conf if isinstance(conf, dict) else {}
    if "width" not in conf:
        found = infer_architecture(unwrap(saved, str(path)))
        conf = {"arch": found["arch"], "width": found["width"], **conf}
    return {"arch": conf.get("arch", "resnet18"), "width": conf["width"]}


def load_teacher(path, device: torch.device):
    """The teacher of a distillation run, frozen in eval mode: a training checkpoint of ours (its
    architecture and width from the run's config) or any other DBNet weights (architecture and
    width read off their shapes)."""
    from ..model import DBNet

    conf = network_of(read_checkpoint(path), path)
    teacher = DBNet(conf["arch"], width=conf["width"])
    load_weights(teacher, path)
    teacher.to(device, memory_format=torch.channels_last).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def teacher_probability(teacher, image: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The teacher's probability map of `image` (N, 3, H, W) at the student's size: with
    `scale` != 1 the teacher reads the image resized by that factor (each side rounded to the
    network's stride) and its map comes back averaged over each student pixel's area when it
    shrinks (a thin word's probability kept in proportion, not sampled away), bilinear when it grows."""
    if scale == 1.0:
        return teacher(image)
    stride = DEFAULT_MULTIPLES[0]
    size = [max(stride, int(side * scale / stride + 0.5) * stride) for side in image.shape[-2:]]
    prob = teacher(F.interpolate(image, size=size, mode="bilinear", align_corners=False)).float()
    if scale > 1:
        return F.adaptive_avg_pool2d(prob, image.shape[-2:])
    return F.interpolate(prob, size=image.shape[-2:], mode="bilinear", align_corners=False)
