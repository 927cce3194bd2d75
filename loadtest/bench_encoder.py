"""Benchmark the serving text encoder on product-title-like texts, against sentence-transformers
on torch (the model it was exported from) in the same run.

Usage::

    python -m loadtest.bench_encoder                      # exports into a temp dir first (torch)
    python -m loadtest.bench_encoder --artifacts artifacts  # uses a published encoder
    python -m loadtest.bench_encoder --no-baseline        # ONNX Runtime only (no export extra)

The two are timed alternately, repeat by repeat, on the same texts and batch size, so the ratio
holds on a shared machine where either time alone may not. An in-process benchmark of
``models.encoder``, not a probe of a running system. Prints figures and writes
``reports/bench_encoder.json``; no asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from models.encoder import TextEncoder

_BRANDS = ("Acme", "Northpeak", "Solara", "Vireo", "Kestrel", "Lumen", "Orca", "Tundra")
_ADJECTIVES = (
    "waterproof", "lightweight", "wireless", "ergonomic", "stainless", "vintage", "organic",
    "compact", "foldable", "insulated", "breathable", "rechargeable", "premium", "heavy-duty",
)  # fmt: skip
_NOUNS = (
    "hiking boots", "trail shoes", "backpack", "headphones", "water bottle", "tent", "jacket",
    "desk lamp", "keyboard", "coffee grinder", "yoga mat", "phone case", "watch", "speaker",
)  # fmt: skip
_EXTRAS = ("for men", "for women", "for kids", "2-pack", "with case", "1L", "XL", "black", "(2024)")


def product_titles(n: int, words: int = 12, seed: int = 0) -> list[str]:
    """``n`` deterministic product titles of about ``words`` words."""
    rng = random.Random(seed)
    titles = []
    for _ in range(n):
        target = max(3, words + rng.randint(-2, 2))
        parts = [rng.choice(_BRANDS)]
        while len(parts) < target:
            parts += rng.choice(_ADJECTIVES).split() + rng.choice(_NOUNS).split()
            parts += rng.choice(_EXTRAS).split()
        titles.append(" ".join(parts[:target]))
    return titles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, help="artifacts root with a published encoder")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--words", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip sentence-transformers on torch"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench_encoder.json"))
    args = parser.parse_args()

    tmp = None
    root = args.artifacts
    if root is None:
        from export.encoder import export_encoder

        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
        started = time.perf_counter()
        export_encoder(root, progress=False)
        print(
            f"export (load + onnx export + validation + publish): "
            f"{time.perf_counter() - started:.1f}s"
        )

    encoder = TextEncoder.from_artifacts(root, batch_size=args.batch_size)
    texts = product_titles(args.n, args.words)
    tokens = [len(e.ids) for e in encoder._tokenizer.encode_batch(texts)]
    print(f"{encoder!r}")
    print(
        f"cpus={os.cpu_count()} texts={len(texts)} words~{args.words} "
        f"tokens mean={statistics.mean(tokens):.1f} max={max(tokens)}"
    )

    baseline = None if args.no_baseline else _sentence_transformer()
    encoder.encode(texts[: args.batch_size])  # warm-up
    if baseline is not None:
        baseline.encode(texts[: args.batch_size], batch_size=args.batch_size)
    times: dict[str, list[float]] = {"onnxruntime": [], "sentence-transformers": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        encoder.encode(texts)
        times["onnxruntime"].append(time.perf_counter() - started)
        if baseline is not None:
            started = time.perf_counter()
            baseline.encode(texts, batch_size=args.batch_size)
            times["sentence-transformers"].append(time.perf_counter() - started)
    rates = {}
    for name, runs in times.items():
        if runs:
            rates[name] = len(texts) / statistics.median(runs)
            print(
                f"{name} batch_size={args.batch_size}: median {statistics.median(runs):.3f}s -> "
                f"{rates[name]:.0f} texts/s (best {len(texts) / min(runs):.0f} texts/s)"
            )
    if len(rates) == 2:
        ratio = rates["onnxruntime"] / rates["sentence-transformers"]
        print(f"onnxruntime / sentence-transformers: {ratio:.2f}x")

    single = []
    for text in texts[:100]:
        started = time.perf_counter()
        encoder.encode([text])
        single.append(time.perf_counter() - started)
    single.sort()
    print(f"one text per call: p50 {1000 * single[50]:.2f} ms, p95 {1000 * single[95]:.2f} ms")
    report = {
        "cpus": os.cpu_count(),
        "texts": len(texts),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "tokens_mean": statistics.mean(tokens),
        "seconds": times,
        "texts_per_s_median": rates,
        "one_text_ms": {"p50": 1000 * single[50], "p95": 1000 * single[95]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()


def _sentence_transformer() -> Any:
    """all-MiniLM-L6-v2 on torch's CPU, from the same weights the export reads."""
    from export.encoder import import_export_deps

    _, sentence_transformer_cls, source_dir = import_export_deps()
    return sentence_transformer_cls(str(source_dir), device="cpu")


if __name__ == "__main__":
    main()
