"""Benchmark the serving text encoder on product-title-like texts.

Usage::

    python -m loadtest.bench_encoder                      # exports into a temp dir first (torch)
    python -m loadtest.bench_encoder --artifacts artifacts  # uses a published encoder

Prints figures only; no asserts.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

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

    encoder.encode(texts[: args.batch_size])  # warm-up
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        encoder.encode(texts)
        times.append(time.perf_counter() - started)
    best, median = min(times), statistics.median(times)
    print(
        f"batch_size={args.batch_size}: median {median:.3f}s -> {len(texts) / median:.0f} texts/s "
        f"(best {len(texts) / best:.0f} texts/s)"
    )

    single = []
    for text in texts[:100]:
        started = time.perf_counter()
        encoder.encode([text])
        single.append(time.perf_counter() - started)
    single.sort()
    print(f"one text per call: p50 {1000 * single[50]:.2f} ms, p95 {1000 * single[95]:.2f} ms")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
