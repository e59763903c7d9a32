"""The device half of the GPU post-processing, written once for `xp` = cupy or numpy.

It turns a batch of probability maps into the reference's candidate list without tracing a
contour: the outer contours of `findContours(RETR_LIST)` are the 8-connected components of the
bitmap, its hole contours the 4-connected background regions that do not touch the border.
Their order is recovered from one key per candidate (outer: raster index of the first pixel;
hole: that of the first hole pixel minus one; descending), which gives the reference's
truncation at max_candidates. Per candidate it keeps what the host needs: bounding box, pixel
count and probability sum (the "slow" score of a component without holes), and for components
the per-row leftmost / rightmost pixels, whose ring has the same minAreaRect as the contour.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import ShapeError

from .arrays import dilate_2x2, label_batch, scatter_max, scatter_min, to_host
from .config import PostprocessConfig

OUTER, HOLE = 0, 1
# Columns of the compact candidate table copied to the host.
FIELDS = ("map", "kind", "ref", "key", "x0", "y0", "x1", "y1", "count", "has_holes", "rows")


def bitmaps(xp, prob, sizes, config: PostprocessConfig):
    """(N, H, W) bool: prob > thresh (+ 2x2 dilation), cleared outside each map's content."""
    mask = prob > config.thresh
    if config.use_dilation:
        mask = dilate_2x2(xp, mask)
    h_all, w_all = prob.shape[1:]
    for i, (h, w) in enumerate(sizes):
        if h < h_all:
            mask[i, h:, :] = False
        if w < w_all:
            mask[i, :, w:] = False
    return mask


def _pixel_stats(xp, labels, count: int):
    """Per label (index 0 unused): first flat index, bbox; and the labelled pixels' positions.
    All int32 (the GPU's atomics); flat indices of the batch must fit."""
    n, h, w = labels.shape
    if n * h * w >= 2**31 - 1:
        raise ShapeError(f"a batch of {n} maps of {h}x{w} is too large for one pass; split it")
    flat = labels.ravel()
    pos = xp.flatnonzero(flat).astype(xp.int32)
    lab = flat[pos]
    x = pos % w
    y = (pos // w) % h
    first = xp.full(count + 1, n * h * w, xp.int32)
    scatter_min(xp, first, lab, pos)
    x0 = xp.full(count + 1, w, xp.int32)
    x1 = xp.full(count + 1, -1, xp.int32)
    y1 = xp.full(count + 1, -1, xp.int32)
    scatter_min(xp, x0, lab, x)
    scatter_max(xp, x1, lab, x)
    scatter_max(xp, y1, lab, y)
    y0 = (first // w) % h  # the first pixel lies on the top row
    return dict(first=first, x0=x0, y0=y0, x1=x1, y1=y1, pos=pos, lab=lab, x=x, y=y)


@dataclass
class DeviceCandidates:
    """Candidates of a batch, in the reference's order, on the device."""

    table: object       # (k, len(FIELDS)) int64, columns FIELDS
    left: object        # per-row leftmost x of the OUTER candidates' rows, concatenated
    right: object       # per-row rightmost x
    sums: object        # (k,) float64 probability sum over the component's pixels
    mask: object        # (N, H, W) bool bitmaps, for the crops of candidates traced on the host


def _outer_table(xp, prob, labels, count):
    """8-connected components = outer contours; key: raster index of the first pixel."""
    n, h, w = labels.shape
    st = _pixel_stats(xp, labels, count)
    ids = xp.arange(1, count + 1)
    pixels = xp.bincount(st["lab"], minlength=count + 1)
    sums = xp.bincount(st["lab"], weights=prob.ravel()[st["pos"]], minlength=count + 1)
    first = st["first"][1:]
    cols = dict(map=first // (h * w), kind=xp.full(count, OUTER, xp.int64), ref=ids,
                key=first % (h * w), x0=st["x0"][1:], y0=st["y0"][1:], x1=st["x1"][1:],
                y1=st["y1"][1:], count=pixels[1:])
    return cols, sums[1:], st


def euler_number(xp, mask) -> int:
    """Components minus holes of all planes of an (N, H, W) bool mask, 8-connected foreground
    (Gray's 2x2 pattern count): a cheap way to know whether any hole exists."""
    padded = xp.pad(mask.view(xp.uint8), ((0, 0), (1, 1), (1, 1)))
    a, b = padded[:, :-1, :-1], padded[:, :-1, 1:]
    c, d = padded[:, 1:, :-1], padded[:, 1:, 1:]
    s = a + b + c + d
    counts = xp.stack([(s == 1).sum(), (s == 3).sum(), ((s == 2) & (a == d)).sum()])
    q1, q3, diagonal = (int(v) for v in to_host(counts))
    return (q1 - q3 - 2 * diagonal) // 4


def _hole_table(xp, mask, labels):
    """Background regions (4-connected) that do not touch the border: RETR_LIST hole contours.
    Their contour is the ring of foreground pixels around them, one pixel beyond their bbox."""
    n, h, w = mask.shape
    back, count = label_batch(xp, ~mask, 4)
    st = _pixel_stats(xp, back, count)
    inner = ((st["x0"] > 0) & (st["y0"] > 0) & (st["x1"] < w - 1) & (st["y1"] < h - 1))[1:]
    ids = xp.flatnonzero(inner) + 1
    first = st["first"][ids]
    parent = labels.ravel()[first - 1]  # the component left of the first hole pixel
    cols = dict(map=first // (h * w), kind=xp.full(len(ids), HOLE, xp.int64), ref=ids,
                key=first % (h * w) - 1, x0=st["x0"][ids] - 1, y0=st["y0"][ids] - 1,
                x1=st["x1"][ids] + 1, y1=st["y1"][ids] + 1,
                count=xp.zeros(len(ids), xp.int64))
    return cols, parent


def _reference_order(xp, cols, n_maps: int, plane: int, max_candidates: int):
    """Indices of the first max_candidates candidates per map, by descending key."""
    order = xp.argsort(cols["map"].astype(xp.int64) * plane + (plane - 1 - cols["key"]))  # unique
    maps = cols["map"][order]
    starts = xp.searchsorted(maps, xp.arange(n_maps))
    rank = xp.arange(len(order)) - starts[maps]
    return order[rank < max_candidates]


def column(name: str) -> int:
    return FIELDS.index(name)


def _row_extremes(xp, st, table, n_labels: int):
    """Per-row leftmost / rightmost x of the selected components, concatenated row by row."""
    outer = table[:, column("kind")] == OUTER
    refs = table[:, column("ref")][outer]
    heights = (table[:, column("y1")] - table[:, column("y0")])[outer] + 1
    starts = xp.full(n_labels + 1, -1, xp.int64)
    offsets = xp.cumsum(heights) - heights
    starts[refs] = offsets
    total = int(heights.sum()) if len(refs) else 0
    left = xp.full(total, np.iinfo(np.int32).max, xp.int32)
    right = xp.full(total, -1, xp.int32)
    chosen = starts[st["lab"]] >= 0
    lab = st["lab"][chosen]
    row = starts[lab] + st["y"][chosen] - st["y0"][lab]
    scatter_min(xp, left, row, st["x"][chosen])
    scatter_max(xp, right, row, st["x"][chosen])
    rows = xp.zeros(len(table), xp.int64)
    rows[xp.flatnonzero(outer)] = heights
    return left, right, rows


def find_candidates(xp, prob, sizes, config: PostprocessConfig) -> DeviceCandidates:
    """prob: (N, H, W) float32; sizes: per map content (h, w). Reference-ordered candidates."""
    n, h, w = prob.shape
    mask = bitmaps(xp, prob, sizes, config)
    labels, count = label_batch(xp, mask, 8)
    outer, sums, st = _outer_table(xp, prob, labels, count)
    if euler_number(xp, mask) == count:  # no hole anywhere: skip labelling the background
        holes, parent = {k: v[:0] for k, v in outer.items()}, xp.zeros(0, xp.int64)
    else:
        holes, parent = _hole_table(xp, mask, labels)
    cols = {k: xp.concatenate([outer[k], holes[k]]) for k in outer}
    has_holes = xp.zeros(count + 1, bool)
    has_holes[parent] = True
    cols["has_holes"] = xp.concatenate([has_holes[1:], xp.zeros(len(parent), bool)]).astype(xp.int64)
    sums = xp.concatenate([sums, xp.zeros(len(parent))])
    keep = _reference_order(xp, cols, n, h * w, config.max_candidates)
    if config.box_type == "quad":  # exact pre-filter: (bbox_w - 1) * (bbox_h - 1) < min_size**2
        area = (cols["x1"][keep] - cols["x0"][keep]) * (cols["y1"][keep] - cols["y0"][keep])
        keep = keep[area >= config.min_size ** 2]
    table = xp.stack([cols[f][keep].astype(xp.int64) for f in FIELDS[:-1]]
                     + [xp.zeros(len(keep), xp.int64)], axis=1)
    if config.box_type == "quad":
        left, right, rows = _row_extremes(xp, st, table, count)
        table[:, column("rows")] = rows
    else:
        left = right = xp.zeros(0, xp.int64)
    return DeviceCandidates(table, left, right, sums[keep], mask)


def to_host_compact(xp, cand: DeviceCandidates):
    """ONE device-to-host copy of everything the host needs: table, row extremes, sums."""
    parts = [cand.table.ravel(), cand.left.astype(xp.int64), cand.right.astype(xp.int64),
             cand.sums.view(xp.int64)]
    sizes = [int(p.size) for p in parts]
    host = to_host(xp.concatenate(parts))
    table, left, right, sums = np.split(host, np.cumsum(sizes)[:-1])
    return table.reshape(-1, len(FIELDS)), left, right, sums.view(np.float64)
