"""The compiled top-n against the dense numpy computation it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from models.topn import top_n_per_row


def dense_top_n(
    cells: np.ndarray, weights: np.ndarray, rows: int, size: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: the dense matrix summed by ``np.bincount``, each row's positive columns
    sorted best first, ties by column."""
    dense = np.bincount(cells, weights, rows * size).reshape(rows, size)
    ids = np.zeros((rows, n), np.int64)
    scores = np.zeros((rows, n), np.float64)
    counts = np.zeros(rows, np.int64)
    for r in range(rows):
        columns = np.flatnonzero(dense[r] > 0)
        best = columns[np.lexsort((columns, -dense[r, columns]))][:n]
        counts[r] = len(best)
        ids[r, : len(best)] = best
        scores[r, : len(best)] = dense[r, best]
    return ids, scores, counts


@pytest.mark.parametrize("seed", range(6))
def test_the_same_columns_and_floats_as_the_dense_matrix(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, size, n = int(rng.integers(1, 20)), int(rng.integers(1, 500)), int(rng.integers(1, 40))
    entries = int(rng.integers(0, 3000))
    cells = rng.integers(0, rows * size, entries)
    if seed % 2:  # integer counts: many ties, broken by column
        weights = rng.integers(0, 3, entries).astype(np.float64)
    else:  # floats of mixed magnitude: sums whose last bits depend on the order of adding
        weights = rng.random(entries) * 10.0 ** rng.integers(-8, 8, entries)
    got = top_n_per_row(cells, weights, rows, size, n)
    want = dense_top_n(cells, weights, rows, size, n)
    assert np.array_equal(got[2], want[2])
    for r in range(rows):
        m = want[2][r]
        assert got[0][r, :m].tolist() == want[0][r, :m].tolist()
        assert got[1][r, :m].tolist() == want[1][r, :m].tolist()  # bit for bit


def test_ties_by_column_zeros_and_negatives_left_out() -> None:
    cells = np.array([7, 2, 5, 9, 9, 3])  # one row of 10 columns
    weights = np.array([1.0, 1.0, 1.0, 2.0, -2.0, -1.0])  # 9 sums to 0, 3 is negative
    ids, scores, counts = top_n_per_row(cells, weights, 1, 10, 2)
    assert counts.tolist() == [2] and ids[0].tolist() == [2, 5] and scores[0].tolist() == [1.0, 1.0]
    ids, _, counts = top_n_per_row(np.zeros(0, np.int64), np.zeros(0), 3, 10, 2)
    assert counts.tolist() == [0, 0, 0]
