"""The top ``n`` columns of each row of a sparse matrix given as entries, compiled.

The neighbour signals (co-visitation, item-kNN, people alike…) score a batch of queries as a
(queries x items) matrix given as entries: a flat cell ``row * size + column`` and a weight,
summed per cell. numpy needs either the dense matrix (``np.bincount`` then ``argpartition``
over every cell: Amazon has 39,000 items per query) or a sort of all the entries; one pass
over the entries per row, into a scratch row, and a bounded insertion of the touched columns
costs neither.

Examples
--------
>>> import numpy as np
>>> cells = np.array([0 * 5 + 3, 0 * 5 + 1, 1 * 5 + 4, 0 * 5 + 3])  # rows of 5 columns
>>> ids, scores, counts = top_n_per_row(cells, np.array([1.0, 1.5, 2.0, 1.0]), 2, 5, 2)
>>> ids[0].tolist(), scores[0].tolist(), counts.tolist()
([3, 1], [2.0, 1.5], [2, 1])
"""

from __future__ import annotations

import numba
import numpy as np


def top_n_per_row(
    cells: np.ndarray, weights: np.ndarray, rows: int, size: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``rows`` rows of ``size`` columns: its ``n`` best positive columns (best
    first, ties by lowest column), their summed weights, and how many there are.

    Each cell's sum adds its entries in their order, from 0.0, as ``np.bincount`` does, so
    the scores are bit for bit those of the dense matrix. Returns ``(ids, scores, counts)``
    with ``ids`` and ``scores`` of shape ``(rows, n)``; row ``r``'s first ``counts[r]`` are
    filled."""
    ids = np.zeros((rows, n), np.int64)
    scores = np.zeros((rows, n), np.float64)
    counts = np.zeros(rows, np.int64)
    if len(cells) and n > 0:
        _top_n(
            np.ascontiguousarray(cells, np.int64),
            np.ascontiguousarray(weights, np.float64),
            size,
            ids,
            scores,
            counts,
        )
    return ids, scores, counts


def warm_up() -> None:
    """Load (or compile, ~1 s) the kernel now, not on a worker's first event."""
    top_n_per_row(np.array([1]), np.array([1.0]), 1, 2, 1)


@numba.njit(cache=True, nogil=True)
def _top_n(
    cells: np.ndarray,
    weights: np.ndarray,
    size: int,
    ids: np.ndarray,
    scores: np.ndarray,
    counts: np.ndarray,
) -> None:
    rows, n = ids.shape
    # the entries grouped by row, each row's in their order (a stable counting sort)
    starts = np.zeros(rows + 1, np.int64)
    for e in range(len(cells)):
        starts[cells[e] // size + 1] += 1
    for r in range(rows):
        starts[r + 1] += starts[r]
    order = np.empty(len(cells), np.int64)
    fill = starts[:rows].copy()
    for e in range(len(cells)):
        r = cells[e] // size
        order[fill[r]] = e
        fill[r] += 1
    sums = np.zeros(size, np.float64)
    touched_in = np.full(size, -1, np.int64)  # the row that last touched a column
    touched = np.empty(size, np.int64)
    for r in range(rows):
        m = 0
        base = r * size
        for k in range(starts[r], starts[r + 1]):
            e = order[k]
            c = cells[e] - base
            if touched_in[c] != r:
                touched_in[c] = r
                sums[c] = 0.0
                touched[m] = c
                m += 1
            sums[c] += weights[e]
        kept = 0
        for t in range(m):
            c = touched[t]
            s = sums[c]
            if not s > 0.0:
                continue
            if kept == n and not _before(s, c, scores[r, n - 1], ids[r, n - 1]):
                continue
            # insert it in place, best first (the last one drops out of a full row)
            j = kept if kept < n else n - 1
            while j > 0 and _before(s, c, scores[r, j - 1], ids[r, j - 1]):
                scores[r, j] = scores[r, j - 1]
                ids[r, j] = ids[r, j - 1]
                j -= 1
            scores[r, j] = s
            ids[r, j] = c
            if kept < n:
                kept += 1
        counts[r] = kept


@numba.njit(cache=True, inline="always")
def _before(score: float, column: int, other_score: float, other_column: int) -> bool:
    """Ranked before: a higher score, or the same and a lower column."""
    return score > other_score or (score == other_score and column < other_column)
