"""Benchmark the catalog's text-neighbour search against numpy, in the same run.

Usage::

    python -m loadtest.bench_search                     # catalog sizes of MovieLens and Amazon
    python -m loadtest.bench_search --items 9742 --queries 20 80

The catalog search (``models.catalog.Catalog.neighbours``) runs its product and top ``n`` as one
ONNX Runtime call; the baseline is what it replaced: a numpy product on one BLAS thread (the
replay's setting) and ``argpartition``. Random unit vectors stand in for embeddings; both must
find the same items.

A live catalog changes between queries (the worker's catalog agent upserts while events are
ranked): "live" times one item changed, then one batch of queries. The catalog writes the one
row into its search matrix in place; the baseline is what it did before: gather the platform's
available vectors into a fresh contiguous matrix after any change, then search it.

Prints figures and writes ``reports/bench_search.json``; no asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.catalog import Catalog, search


def numpy_search(matrix: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
    """The top ``n`` rows of ``matrix`` by dot product with each query, best first."""
    sims = np.ascontiguousarray((matrix @ queries.T).T)
    top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
    result: np.ndarray = np.take_along_axis(top, order, axis=1)
    return result


def regather_search(catalog: Catalog, queries: np.ndarray, n: int) -> np.ndarray:
    """The search as it was before the matrix was kept in place: copy, then search."""
    rows = catalog.searchable("shop")
    matrix = np.ascontiguousarray(catalog.vectors[rows])
    top, _ = search(queries, matrix, n)
    result: np.ndarray = rows[top]
    return result


def live_ms(
    catalog: Catalog, queries: np.ndarray, n: int, searcher: Callable[..., object], repeats: int
) -> float:
    """Median ms of: one item's vector changes, then ``searcher(catalog, queries, n)``."""
    rng = np.random.default_rng(1)
    times = []
    for i in range(repeats + 1):
        vector = rng.standard_normal(catalog.dim).astype(np.float32)
        start = time.perf_counter()
        catalog.upsert(f"shop:{10 * i + 1}", "shop", vector, available=True, added_ts=0.0)
        searcher(catalog, queries, n)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) * 1e3


def median_ms(call: Callable[..., object], *args: object, repeats: int) -> float:
    """Median wall time of ``call(*args)`` in ms, after one warm-up call (first-call
    allocations, thread start-up)."""
    call(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[9742, 19757])
    parser.add_argument("--queries", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--n", type=int, default=100, help="neighbours per query")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_search.json"))
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")  # as in the replay (models.evaluation)
    except ImportError:
        pass

    rng = np.random.default_rng(0)
    rows = []
    print(f"{'items':>7} {'queries':>7} {'numpy ms':>9} {'onnx ms':>8} {'speed-up':>8} {'same':>6}")
    for items in args.items:
        vectors = rng.standard_normal((items, args.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        catalog = Catalog(dim=args.dim)
        for i, v in enumerate(vectors):
            catalog.upsert(f"shop:{i}", "shop", v, available=True, added_ts=0.0)
        for count in args.queries:
            queries = rng.standard_normal((count, args.dim)).astype(np.float32)
            found, _ = catalog.neighbours(queries, "shop", args.n)
            same = float(np.mean(found == numpy_search(vectors, queries, args.n)))
            numpy_ms = median_ms(numpy_search, vectors, queries, args.n, repeats=args.repeats)
            onnx_ms = median_ms(
                catalog.neighbours, queries, "shop", args.n, repeats=args.repeats
            )
            rows.append(
                {
                    "items": items,
                    "queries": count,
                    "n": args.n,
                    "numpy_ms": round(numpy_ms, 3),
                    "onnx_ms": round(onnx_ms, 3),
                    "speed_up": round(numpy_ms / onnx_ms, 2),
                    "same_items": same,
                }
            )
            print(
                f"{items:>7} {count:>7} {numpy_ms:>9.2f} {onnx_ms:>8.2f} "
                f"{numpy_ms / onnx_ms:>7.1f}x {same:>6.1%}"
            )
    live = []
    count = args.queries[0]
    print(f"\nlive catalog: one item changed, then {count} queries")
    print(f"{'items':>7} {'regather ms':>12} {'in place ms':>12} {'speed-up':>8} {'same':>6}")
    for items in args.items:
        catalog = Catalog(dim=args.dim)
        for i, v in enumerate(rng.standard_normal((items, args.dim)).astype(np.float32)):
            catalog.upsert(f"shop:{i}", "shop", v, available=i % 10 != 0, added_ts=0.0)
        queries = rng.standard_normal((count, args.dim)).astype(np.float32)
        same = float(
            np.mean(
                catalog.neighbours(queries, "shop", args.n)[0]
                == regather_search(catalog, queries, args.n)
            )
        )
        regather = live_ms(catalog, queries, args.n, regather_search, args.repeats)
        in_place = live_ms(
            catalog, queries, args.n, lambda c, q, n: c.neighbours(q, "shop", n), args.repeats
        )
        live.append(
            {
                "items": items,
                "queries": count,
                "regather_ms": round(regather, 3),
                "in_place_ms": round(in_place, 3),
                "speed_up": round(regather / in_place, 2),
                "same_items": same,
            }
        )
        print(
            f"{items:>7} {regather:>12.2f} {in_place:>12.2f} {regather / in_place:>7.1f}x "
            f"{same:>6.1%}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dim": args.dim, "runs": rows, "live": live}, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
