"""Benchmark what a background reranker fit costs the loop that keeps serving, in one run.

Usage::

    python -m loadtest.bench_refit                  # a late MovieLens fit's size
    python -m loadtest.bench_refit --lists 10000 --fits 3

The stream worker fits the reranker's trees (``models.rerank``) while its event loop keeps
ranking. A busy loop stands in for that loop: small numpy products and a little Python per
iteration, as a ranking of a batch does. It runs alone (the baseline), then beside fits of
``--lists`` synthetic answered lists (the positive and 10 negatives each, 36 float32 inputs; the
reranker's default trees) made

* ``thread``: in a thread of the same process, on one OpenMP thread (the worker before);
* ``file``: in the reranker's fitting process (``models.rerank._fitter``), the lists
  handed over through a temporary file (what it falls back to without room in ``/dev/shm``);
* ``shared``: in the fitting process, the lists handed over in shared memory (the worker's).

Each way's reranker has fitted once before the fit measured: a running worker's fits find the
fitting process started and the hand-over block made.

For each: the fit's wall time, the loop's iterations per second against the baseline's, and
the gaps between two iterations (p50, p99, longest): a gap is how long an event waiting on the
loop would have waited. Prints figures and writes ``reports/bench_refit.json``; no asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from models import rerank
from models.rerank import Reranker

#: see the module docstring; "alone" is the baseline
WAYS = ("alone", "thread", "file", "shared")


def answered_lists(rr: Reranker, count: int, seed: int = 0) -> np.ndarray:
    """Teach ``rr`` ``count`` synthetic answered lists (40 candidates, 33 signals, the engaged
    one higher in a few of them together, so the trees find something and grow to full size);
    return one more list's features, to trigger the next fit with."""
    rng = np.random.default_rng(seed)
    request = np.array([0.5, 0.5], np.float32)
    features = rng.random((40, 33), dtype=np.float32)
    for _ in range(count):
        features = rng.random((40, 33), dtype=np.float32)
        features[0, :4] += rng.random(4, dtype=np.float32) * 0.5
        rr.learn_one(features, 0, request)
    return features


def work(vectors: np.ndarray, query: np.ndarray) -> None:
    """One iteration of the stand-in loop: a small product, a top 10, a little Python."""
    scores = vectors @ query
    top = np.argpartition(-scores, 10)[:10]
    sorted(f"item-{i}" for i in top.tolist())


def measure(way: str, lists: int, alone_s: float) -> dict[str, Any]:
    """The loop alone for ``alone_s`` (``way`` "alone"), or from the moment it triggers a fit
    (its learn_one) until it serves the new trees: the reranker's second fit, as a running
    worker's are (the first also starts what later fits reuse)."""
    rr = Reranker(retrain_every=lists, max_lists=lists, background=way != "alone")
    if way != "alone":
        answered_lists(rr, lists, seed=2)
        rr.wait()
    last = answered_lists(rr, lists - 1)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, 384)).astype(np.float32)
    query = rng.standard_normal(384).astype(np.float32)
    gaps: list[float] = []
    start = now = time.perf_counter()
    trigger_ms = 0.0
    if way != "alone":
        rr.learn_one(last, 0, np.array([0.5, 0.5], np.float32))
        trigger_ms = (time.perf_counter() - start) * 1e3
    iterations = 0
    while True:
        work(vectors, query)
        rr.ready  # the worker's loop polls between batches  # noqa: B018
        before, now = now, time.perf_counter()
        gaps.append(now - before)
        iterations += 1
        if (way == "alone" and now - start >= alone_s) or (way != "alone" and rr.fits == 2):
            break
    wall = now - start
    ms = np.array(gaps) * 1e3
    return {
        "way": way,
        "seconds": round(wall, 3),
        "trigger_ms": round(trigger_ms, 1),
        "iterations_per_s": round(iterations / wall, 1),
        "gap_p50_ms": round(float(np.percentile(ms, 50)), 3),
        "gap_p99_ms": round(float(np.percentile(ms, 99)), 3),
        "gap_max_ms": round(float(ms.max()), 2),
    }


def join_ms(lists: int) -> dict[str, float]:
    """Gathering the lists for a fit: from the reranker's ring against joining one small array
    per list (how they were kept before), the same rows."""
    rr = Reranker(retrain_every=lists + 1, max_lists=lists)
    answered_lists(rr, lists)
    start = time.perf_counter()
    rows, lengths = rr.stored()
    ring = (time.perf_counter() - start) * 1e3
    per_list = [r[:n].copy() for r, n in zip(rows, lengths, strict=True)]  # one array each
    start = time.perf_counter()
    np.concatenate(per_list)
    joined = (time.perf_counter() - start) * 1e3
    return {"ring_ms": round(ring, 1), "joined_ms": round(joined, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=int, default=30_000, help="answered lists per fit")
    parser.add_argument("--fits", type=int, default=2, help="fits per way")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_refit.json"))
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # the loop's products on one thread, as a worker's
    thread = ThreadPoolExecutor(1, thread_name_prefix="bench-fit")
    runs: list[dict[str, Any]] = []
    alone_s = 5.0
    for i in range(args.fits):
        for way in WAYS:
            with contextlib.ExitStack() as patches:
                if way == "thread":  # the reranker's fitter as it was: a thread of this one
                    patches.enter_context(mock.patch.object(rerank, "_fitter", lambda: thread))
                # no shared memory: through a file (a thread reads it as the process would)
                if way in ("thread", "file"):
                    patches.enter_context(
                        mock.patch.object(rerank, "SharedMemory", side_effect=OSError("off"))
                    )
                runs.append({"fit": i + 1, **measure(way, args.lists, alone_s)})
    baseline = float(np.median([r["iterations_per_s"] for r in runs if r["way"] == "alone"]))
    print(
        f"{'way':>8} {'fit':>3} {'s':>6} {'trigger ms':>10} {'loop it/s':>10} {'vs alone':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    for r in runs:
        r["vs_alone"] = round(r["iterations_per_s"] / baseline, 3)
        print(
            f"{r['way']:>8} {r['fit']:>3} {r['seconds']:>6.2f} {r['trigger_ms']:>10.1f} "
            f"{r['iterations_per_s']:>10.0f} {r['vs_alone']:>8.3f} {r['gap_p50_ms']:>7.3f} "
            f"{r['gap_p99_ms']:>7.3f} {r['gap_max_ms']:>7.2f}"
        )
    gather = join_ms(args.lists)
    print(
        f"gathering {args.lists:,} lists: ring {gather['ring_ms']} ms, "
        f"joined per list {gather['joined_ms']} ms"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"lists": args.lists, "runs": runs, "gather": gather}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")
    thread.shutdown()
    rerank._fitter().shutdown()


if __name__ == "__main__":
    main()
