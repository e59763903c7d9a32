"""GPU post-processing of a batch of maps that live on the device (CuPy), box for box the
reference; the same code runs with NumPy (the twin the tests compare with the CPU path).

The device does the per-pixel work and the host the per-box work, with two copies per batch
whatever the number of maps and boxes (each a fixed handful of array operations, no loop):
1. device: threshold (+ 2x2 dilation) of the whole batch and the finite check, packed to bits:
   ONE copy of N*H*W / 8 bytes (a 32nd of the float map);
2. host: contours and candidates exactly as the CPU path (`cpu.find_candidates`);
3. device: the score crops of every candidate of the batch gathered by one indexed read from
   one small uploaded crop table: ONE copy of the crop pixels back;
4. host: the scores of the whole batch in one compiled call (`compiled.window_means`; OpenCV per
   candidate where it is not built), box_thresh, unclip, rectangles (`cpu.finish`).
Why not label components on the device: findContours on the host costs about 0.1-0.5 ms per
megapixel, while per-component device work costs kernel launches and syncs per candidate.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from engine.lazy import array_module

from .arrays import dilate_2x2, to_host
from dbnet.postprocess_config import PostprocessConfig, PostprocessError
from . import compiled
from .cpu import NOT_FINITE, Candidates, find_candidates, finish, masked_means


def host_bitmaps(xp, prob, config: PostprocessConfig) -> np.ndarray:
    """(N, H, W) uint8 bitmaps of a device batch on the host, in one copy; raises on NaN / inf."""
    mask = prob > config.thresh
    if config.use_dilation:
        mask = dilate_2x2(xp, mask)
    finite = xp.isfinite(prob).all().reshape(1).astype(xp.uint8)
    host = to_host(xp.concatenate([finite, xp.packbits(mask.ravel())]))
    if not host[0]:
        raise PostprocessError(NOT_FINITE)
    return np.unpackbits(host[1:], count=mask.size).reshape(mask.shape)


def gather_crops(xp, prob, crops: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """crops[m]: (n_m, 4) inclusive x0, y0, x1, y1 in map m. Returns the pixels of every crop,
    map after map and crop after crop, row by row (float32, read from the device in one indexed
    gather and one copy), and the (sum n_m, 3) int64 table of each crop's offset in them, its
    height and its width."""
    n, h, w = prob.shape
    table = np.concatenate([np.column_stack([np.full(len(c), m), c]) for m, c in enumerate(crops)]
                           ).astype(np.int64).reshape(-1, 5)
    heights = table[:, 4] - table[:, 2] + 1
    widths = table[:, 3] - table[:, 1] + 1
    sizes = heights * widths
    offsets = np.cumsum(sizes) - sizes
    windows = np.column_stack([offsets, heights, widths]).astype(np.int64).reshape(-1, 3)
    if not sizes.sum():
        return np.zeros(0, np.float32), windows
    dev = xp.asarray(np.column_stack([table[:, :3], widths, offsets]))  # map, x0, y0, width, start
    pixel = xp.arange(int(sizes.sum()))
    owner = xp.searchsorted(xp.ascontiguousarray(dev[:, 4]), pixel, side="right") - 1
    row_col = pixel - dev[owner, 4]
    row, col = row_col // dev[owner, 3], row_col % dev[owner, 3]
    flat = dev[owner, 0] * (h * w) + (dev[owner, 2] + row) * w + dev[owner, 1] + col
    return to_host(prob.ravel()[flat]), windows


def crop_pieces(values: np.ndarray, windows: np.ndarray) -> List[np.ndarray]:
    """The gathered crops as (height, width) arrays (views of values)."""
    return [values[o:o + hh * ww].reshape(hh, ww) for o, hh, ww in windows.tolist()]


def gathered_scores(values: np.ndarray, windows: np.ndarray, cands: List[Candidates]) -> List[np.ndarray]:
    """Per map the scores of its candidates from the gathered crops: in one compiled call for the
    batch where it is built, else with OpenCV per candidate (the same float64 values)."""
    bounds = np.cumsum([0] + [len(c) for c in cands]).tolist()
    scores = None
    if bounds[-1]:
        offsets = np.cumsum([0] + [len(c.points) for c in cands]).tolist()
        starts = np.concatenate([c.starts[:-1] + o for c, o in zip(cands, offsets)] + [offsets[-1:]])
        scores = compiled.window_means(values, windows, np.concatenate([c.points for c in cands]),
                                       starts)
    if scores is None:
        pieces = crop_pieces(values, windows)
        return [masked_means(pieces[a:b], c.fills, c.shifts())
                for c, a, b in zip(cands, bounds[:-1], bounds[1:])]
    return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def postprocess_batch(prob, sizes, config: PostprocessConfig) -> List[Tuple[list, list]]:
    """prob: (N, H, W) float32 (CuPy or NumPy); sizes: per map content (h, w).
    Returns per map (polygons in map pixels, scores), in the reference's order."""
    xp = array_module(prob)
    bitmaps = host_bitmaps(xp, prob, config)
    cands: List[Candidates] = [find_candidates(bitmaps[m, :h, :w], config)
                               for m, (h, w) in enumerate(sizes)]
    values, windows = gather_crops(xp, prob, [c.crops for c in cands])
    return [finish(c, scores, config)
            for c, scores in zip(cands, gathered_scores(values, windows, cands))]
