"""Benchmark the ranking stages that run in ONNX Runtime against what they replaced, in one run.

Usage::

    python -m loadtest.bench_head                      # the exported head under ./artifacts
    python -m loadtest.bench_head --items 9742 39000 --requests 64 --candidates 330

* **The ranking head.** The item tower's output is cached per catalog item, so a batch runs only
  the scorer on gathered ``item_hidden`` rows; the baseline is what the single-graph head did:
  gather every candidate's 384-d vector and run the item tower on it. Both must give the same
  scores. The one-off cost of encoding the whole catalog through the tower is printed too.
* **The sequence model** (when one is published, see ``--sequence-artifacts``): a batch's
  queries (every request with a full history) and the search of its item vectors for each
  request's 50 nearest, beside the cached head's time on the same batch (the ratio is the
  figure: what the optional component adds to ranking).
* **The reranker's trees.** One ONNX Runtime run over a batch's rows against concurrent runs over
  slices of them (``models.rerank.SCORING_THREADS``); both must give the same floats.

Random unit vectors stand in for embeddings. Prints figures and writes
``reports/bench_head.json``; no asserts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from loadtest.bench_search import median_ms
from models import rerank
from models.ranker import DENSE_FEATURES, RankingHead
from models.rerank import Reranker
from models.sequence import SequenceModel


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_head(
    head: RankingHead, items: int, requests: int, candidates: int, repeats: int
) -> dict[str, float]:
    rng = np.random.default_rng(items)
    dim = head.dim
    vectors = unit_rows(rng, items, dim)
    person, context = unit_rows(rng, requests, dim), unit_rows(rng, requests, dim)
    n = requests * candidates
    rows = rng.integers(0, items, n)
    dense = rng.random((n, len(DENSE_FEATURES)), dtype=np.float32)
    request = np.repeat(np.arange(requests), candidates)

    def per_candidate() -> np.ndarray:
        return head.score(person, context, head.item_hidden(vectors[rows]), dense, request)

    encode_ms = median_ms(head.item_hidden, vectors, repeats=3)
    hidden = head.item_hidden(vectors)

    def cached() -> np.ndarray:
        return head.score(person, context, hidden[rows], dense, request)

    return {
        "items": items,
        "requests": requests,
        "candidates": n,
        "tower_per_candidate_ms": round(median_ms(per_candidate, repeats=repeats), 3),
        "tower_cached_ms": round(median_ms(cached, repeats=repeats), 3),
        "encode_catalog_once_ms": round(encode_ms, 3),
        "max_abs_diff": float(np.max(np.abs(per_candidate() - cached()))),
    }


def bench_sequence(
    model: SequenceModel, items: int, requests: int, repeats: int
) -> dict[str, float]:
    from models.catalog import search

    rng = np.random.default_rng(items)
    vectors = unit_rows(rng, items, model.dim)
    encode_ms = median_ms(model.item_vectors, vectors, repeats=3)
    tower = model.item_vectors(vectors)
    histories = [vectors[rng.integers(0, items, model.length)] for _ in range(requests)]
    flags = [np.r_[np.zeros(model.length_other), np.ones(model.length_same)]] * requests
    queries = model.queries(histories, flags)
    return {
        "items": items,
        "requests": requests,
        "queries_ms": round(median_ms(model.queries, histories, flags, repeats=repeats), 3),
        "search_50_ms": round(median_ms(search, queries, tower, 50, repeats=repeats), 3),
        "encode_catalog_once_ms": round(encode_ms, 3),
    }


def bench_trees(lists: int, per_list: int, repeats: int) -> dict[str, float]:
    """Trees fitted as the pipeline fits them (200 rounds, 15 leaves) on random lists whose
    engaged candidate depends on two signals together, then scored both ways."""
    rng = np.random.default_rng(1)
    features = 17
    rr = Reranker(retrain_every=4000)
    for _ in range(4000):
        f = rng.random((40, features), dtype=np.float32)
        rr.learn_one(f, int(np.argmax(f[:, 0] * f[:, 1] + 0.3 * rng.random(40))))
    batch = [rng.random((per_list, features), dtype=np.float32) for _ in range(lists)]
    threads = rerank.SCORING_THREADS
    rerank.SCORING_THREADS = 1
    try:
        one = rr.score_many(batch)
        one_ms = median_ms(rr.score_many, batch, repeats=repeats)
    finally:
        rerank.SCORING_THREADS = threads
    split = rr.score_many(batch)
    return {
        "rows": lists * per_list,
        "threads": threads,
        "one_run_ms": round(one_ms, 3),
        "threaded_ms": round(median_ms(rr.score_many, batch, repeats=repeats), 3),
        "same_floats": all(np.array_equal(a, b) for a, b in zip(one, split, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--items", type=int, nargs="+", default=[9742, 39000])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=330, help="per request")
    parser.add_argument(
        "--sequence-artifacts", type=Path, default=None, help="default: --artifacts"
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_head.json"))
    args = parser.parse_args()

    head = RankingHead.from_artifacts(args.artifacts)  # a clear error if none is exported
    heads = []
    print(f"head {head.version}: {args.requests} requests x {args.candidates} candidates")
    print(
        f"{'items':>7} {'tower per candidate ms':>23} {'cached ms':>10} {'speed-up':>8} "
        f"{'encode catalog ms':>18} {'max |diff|':>10}"
    )
    for items in args.items:
        r = bench_head(head, items, args.requests, args.candidates, args.repeats)
        heads.append(r)
        speed_up = r["tower_per_candidate_ms"] / r["tower_cached_ms"]
        print(
            f"{items:>7} {r['tower_per_candidate_ms']:>23.2f} {r['tower_cached_ms']:>10.2f} "
            f"{speed_up:>7.1f}x {r['encode_catalog_once_ms']:>18.1f} {r['max_abs_diff']:>10.1e}"
        )
    sequences = []
    sequence_root = args.sequence_artifacts or args.artifacts
    if SequenceModel.available(sequence_root):
        model = SequenceModel.from_artifacts(sequence_root)
        print(f"sequence model {model.version}: {args.requests} requests")
        for items, head_r in zip(args.items, heads, strict=True):
            r = bench_sequence(model, items, args.requests, args.repeats)
            r["head_cached_ms"] = head_r["tower_cached_ms"]
            sequences.append(r)
            added = r["queries_ms"] + r["search_50_ms"]
            print(
                f"{items:>7} queries {r['queries_ms']:.2f} ms, search 50 {r['search_50_ms']:.2f}"
                f" ms: {added / head_r['tower_cached_ms']:.2f}x the head's scoring; "
                f"encode catalog {r['encode_catalog_once_ms']:.1f} ms"
            )
    else:
        print(f"no sequence model under {sequence_root}: not measured")
    trees = bench_trees(args.requests, 50, args.repeats)
    print(
        f"reranker trees, {trees['rows']} rows: one run {trees['one_run_ms']:.2f} ms, "
        f"{trees['threads']} threads {trees['threaded_ms']:.2f} ms "
        f"({trees['one_run_ms'] / trees['threaded_ms']:.1f}x), same floats: "
        f"{trees['same_floats']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"head": head.version, "heads": heads, "sequence": sequences, "trees": trees},
            indent=2,
        )
    )
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
