"""DB losses: L = Ls + alpha * Lb + beta * Lt (paper: alpha = 1, beta = 10).

Ls: binary cross-entropy on the probability map with 3:1 hard-negative mining (OHEM),
Lb: dice loss on the approximate binary map (k = 50), Lt: masked L1 on the threshold map.
With a teacher, `distill_loss` adds how far the student's probability map is from the teacher's.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

EPS = 1e-6


def balanced_bce(pred, gt, mask, negative_ratio: float = 3.0, min_negatives: int = 256):
    """BCE over positives plus the hardest `negative_ratio` x as many negatives (whole batch).

    `min_negatives` keeps learning from text-free batches (hard-negative scenes)."""
    positive = gt * mask
    negative = (1 - gt) * mask
    pos_count = int(positive.sum().item())
    neg_count = int(min(negative.sum().item(), max(pos_count * negative_ratio, min_negatives)))
    loss = F.binary_cross_entropy(pred.clamp(EPS, 1 - EPS), gt, reduction="none")
    pos_loss = (loss * positive).sum()
    neg_loss = (loss * negative).flatten()
    if neg_count > 0:
        neg_loss = torch.topk(neg_loss, neg_count, sorted=False).values.sum()
    else:
        neg_loss = neg_loss.sum() * 0
    return (pos_loss + neg_loss) / (pos_count + neg_count + EPS)


def dice_loss(pred, gt, mask):
    inter = (pred * gt * mask).sum()
    union = (pred * mask).sum() + (gt * mask).sum() + EPS
    return 1 - 2.0 * inter / union


def masked_l1(pred, gt, mask):
    total = mask.sum()
    if total.item() == 0:
        return pred.sum() * 0
    return (torch.abs(pred - gt) * mask).sum() / total


def db_loss(out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor],
            alpha: float = 1.0, beta: float = 10.0) -> Dict[str, torch.Tensor]:
    """Loss terms of a DBNet training output against make_targets() targets (N, H, W)."""
    gt, mask = batch["gt"], batch["mask"]
    ls = balanced_bce(out["binary"][:, 0], gt, mask)
    lb = dice_loss(out["thresh_binary"][:, 0], gt, mask)
    lt = masked_l1(out["thresh"][:, 0], batch["thresh_map"], batch["thresh_mask"])
    return {"loss": ls + alpha * lb + beta * lt, "bce": ls, "dice": lb, "l1": lt}


def distill_loss(student_prob, teacher_prob):
    """Mean per-pixel KL divergence of the student's probability map from the teacher's, each
    pixel a Bernoulli: the soft-target cross-entropy less the teacher's own entropy, so zero
    where the two agree and with the gradient of that cross-entropy. Soft targets carry what
    hard labels cannot: how sure the teacher is of faint and small words."""
    s = student_prob.float().clamp(EPS, 1 - EPS)
    t = teacher_prob.float().clamp(EPS, 1 - EPS)
    return (t * torch.log(t / s) + (1 - t) * torch.log((1 - t) / (1 - s))).mean()


def training_loss(pred: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor],
                  taught: Optional[torch.Tensor] = None, weight: float = 1.0) -> Dict[str, torch.Tensor]:
    """A step's loss terms in float32: the DB loss, plus `weight` x the distillation term when a
    teacher's probability map `taught` is given."""
    terms = db_loss({k: v.float() for k, v in pred.items()}, batch)
    if taught is not None:
        terms["distill"] = distill_loss(pred["binary"], taught)
        terms["loss"] = terms["loss"] + weight * terms["distill"]
    return terms
