"""Adapt the text encoder to a dataset: fine-tune it on what people chose next.

all-MiniLM-L6-v2 places texts that *say* the same near each other; a recommender needs the
item a person picks next near the items they picked before (a rotary cutter's buyer next buys
a cutting mat, whose text says something else). So, for evaluating on a real dataset, the
encoder can be fine-tuned on that dataset's learn-only positives (Amazon: the train users',
never the evaluated users' events): every two consecutive positives of a person on one platform
are a pair, the earlier item's text the query and the next one's the target, with the batch's
other targets as negatives (an in-batch softmax at ``temperature``; another pair of the batch
with the same target is not counted as a negative, which would be a false one).

It is checked on persons kept out of the pairs (``holdout_share`` of them, chosen by a hash of
their id): each one's last positive per platform is ranked against that platform's whole
catalog, minus the items they had, by its best cosine with their ``recent`` items before it,
with the encoder before and after. A fine-tuning that does not rank these better is refused
(:class:`~models.errors.ExportValidationError`): nothing is published.

The result is a sentence-transformers folder, exported to ONNX and validated like the stock
encoder by :func:`export.encoder.export_encoder`; the serving path never sees torch.

Examples
--------
>>> from models.events import Event, EventType
>>> def bought(user, item, platform="shop"):
...     return Event(event_id=f"{user}-{item}", type=EventType.PURCHASE, platform=platform,
...                  user=user, item=item, ts=0)
>>> events = [bought("ann", "a"), bought("ann", "x", "video"), bought("ann", "b"),
...           bought("ann", "b"), bought("ann", "c"), bought("bob", "a")]
>>> next_item_pairs(events)
[('shop:a', 'shop:b'), ('shop:b', 'shop:c')]
>>> AdaptSpec(batch=1)
Traceback (most recent call last):
...
ValueError: batch must be >= 2 (the batch's other targets are the negatives)
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ExportError, ExportValidationError
from models.events import CatalogItem, Event, item_key
from models.metrics import Hit, ndcg


@dataclass(frozen=True)
class AdaptSpec:
    """How the encoder is fine-tuned (measured on Amazon Arts ↔ Office: see the README)."""

    steps: int = 600
    batch: int = 64  # pairs per step; the other 63 targets are each pair's negatives
    learning_rate: float = 5e-5
    temperature: float = 0.05
    max_seq_length: int = 64  # tokens: Amazon titles + categories fit; 256 costs more
    holdout_share: float = 0.05  # persons kept out of the pairs, to check the result on
    recent: int = 3  # the check's query: the best cosine with the person's last items here
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch < 2:
            raise ValueError("batch must be >= 2 (the batch's other targets are the negatives)")
        if self.steps < 1 or self.recent < 1 or self.max_seq_length < 8:
            raise ValueError("steps and recent must be >= 1, max_seq_length >= 8")
        if not 0 < self.holdout_share < 1:
            raise ValueError(f"holdout_share must be in (0, 1), not {self.holdout_share}")
        if not (self.learning_rate > 0 and self.temperature > 0):
            raise ValueError("learning_rate and temperature must be > 0")


DEFAULT_SPEC = AdaptSpec()


def next_item_pairs(events: Iterable[Event]) -> list[tuple[str, str]]:
    """(earlier, next) item keys of every two consecutive positives of a person on one platform,
    in stream order; the same item twice in a row is no pair."""
    last: dict[tuple[str, str], str] = {}
    pairs = []
    for e in events:
        if e.item is None or not e.is_positive:
            continue
        key = item_key(e.platform, e.item)
        earlier = last.get((e.user, e.platform))
        if earlier is not None and earlier != key:
            pairs.append((earlier, key))
        last[(e.user, e.platform)] = key
    return pairs


def held_out(person: str, share: float) -> bool:
    """Whether ``person`` is kept for the check (a fixed hash: the same on every machine)."""
    digest = hashlib.sha256(person.encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def next_item_ndcg(
    vectors: np.ndarray,
    keys: Sequence[str],
    histories: Sequence[tuple[list[str], str]],
    recent: int,
) -> float:
    """NDCG@10 of each ``(earlier items, next item)`` (one platform's keys, ``platform:item``)
    ranked against that platform's catalog minus the earlier items, by the best cosine
    (``vectors`` are unit rows, in ``keys`` order) with the latest ``recent`` earlier items.

    >>> v = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], np.float32)
    >>> keys = ["s:a", "s:b", "s:c", "s:d"]
    >>> round(next_item_ndcg(v, keys, [(["s:a"], "s:b"), (["s:c"], "s:b")], 1), 4)  # 1st, 2nd
    0.8155
    """
    row = {k: i for i, k in enumerate(keys)}
    by_platform: dict[str, list[int]] = defaultdict(list)
    for k, i in row.items():
        by_platform[k.split(":", 1)[0]].append(i)
    platform_rows = {p: np.array(r) for p, r in by_platform.items()}  # ascending rows
    hits = []
    for earlier, target in histories:
        platform = target.split(":", 1)[0]
        rows = platform_rows[platform]
        query = vectors[[row[k] for k in earlier[-recent:]]]
        score = (vectors[rows] @ query.T).max(axis=1)
        score[np.isin(rows, [row[k] for k in earlier])] = -np.inf
        place = int((score > score[np.searchsorted(rows, row[target])]).sum()) + 1
        hits.append(Hit(-1, platform, place))
    return ndcg(hits)


def check_histories(events: Iterable[Event], share: float) -> list[tuple[list[str], str]]:
    """The held-out persons' last positive per platform after at least one there, with the
    items they had there before it (a repeat of one of those is not a target)."""
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    for e in events:
        if e.item is not None and e.is_positive and held_out(e.user, share):
            seen[(e.user, e.platform)].append(item_key(e.platform, e.item))
    return [
        (items[:-1], items[-1])
        for items in seen.values()
        if len(items) > 1 and items[-1] not in items[:-1]
    ]


def adapt(
    items: Sequence[CatalogItem],
    events: Sequence[Event],
    out: Path,
    spec: AdaptSpec = DEFAULT_SPEC,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the stock encoder on ``events`` (learn-only positives: never an evaluated
    one), save it as a sentence-transformers folder at ``out``; returns what to record."""
    from export.encoder import import_export_deps

    torch, sentence_transformer_cls, source_dir = import_export_deps()
    from tqdm.auto import tqdm

    started = time.time()
    torch.manual_seed(spec.seed)
    torch.set_num_threads(2)
    text = {it.key: it.text() for it in items}
    keys = list(text)
    pairs = [
        (a, b)
        for a, b in next_item_pairs(e for e in events if not held_out(e.user, spec.holdout_share))
        if a in text and b in text
    ]
    histories = check_histories(events, spec.holdout_share)
    if len(pairs) < spec.batch or not histories:
        raise ExportError(
            f"{len(pairs)} pairs of consecutive positives and {len(histories)} held-out "
            f"histories: too few to fine-tune the encoder on (batch {spec.batch})"
        )
    random.Random(spec.seed).shuffle(pairs)
    st = sentence_transformer_cls(str(source_dir), device="cpu")
    st.max_seq_length = spec.max_seq_length

    def encode() -> np.ndarray:
        st.eval()
        with torch.no_grad():
            vectors = st.encode(
                [text[k] for k in keys], batch_size=256, normalize_embeddings=True,
                show_progress_bar=progress, convert_to_numpy=True,
            )
        return np.asarray(vectors, np.float32)

    before = next_item_ndcg(encode(), keys, histories, spec.recent)
    optimizer = torch.optim.AdamW(st.parameters(), lr=spec.learning_rate)
    steps = min(spec.steps, len(pairs) // spec.batch)
    losses = []
    st.train()
    bar = tqdm(total=steps, desc="adapt encoder", disable=not progress)
    for step in range(steps):
        batch = pairs[step * spec.batch : (step + 1) * spec.batch]
        features = st.preprocess([text[a] for a, _ in batch] + [text[b] for _, b in batch])
        vectors = torch.nn.functional.normalize(st(features)["sentence_embedding"], dim=-1)
        queries, targets = vectors[: len(batch)], vectors[len(batch) :]
        logits = queries @ targets.T / spec.temperature
        targets_keys = [b for _, b in batch]
        same = torch.tensor([[x == y for y in targets_keys] for x in targets_keys])
        logits = logits.masked_fill(same & ~torch.eye(len(batch), dtype=torch.bool), -1e4)
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    bar.close()
    after = next_item_ndcg(encode(), keys, histories, spec.recent)
    record = {
        "spec": asdict(spec),
        "pairs": len(pairs),
        "pairs_seen": steps * spec.batch,
        "steps": steps,
        "loss_first_50": round(float(np.mean(losses[:50])), 4),
        "loss_last_50": round(float(np.mean(losses[-50:])), 4),
        "check_histories": len(histories),
        "check_ndcg@10_before": round(before, 4),
        "check_ndcg@10_after": round(after, 4),
        "seconds": round(time.time() - started, 1),
    }
    if progress:
        print(
            f"adapted on {steps * spec.batch:,} of {len(pairs):,} pairs: held-out persons' next "
            f"item NDCG@10 {before:.4f} -> {after:.4f} ({len(histories)} histories)"
        )
    if not after > before:
        raise ExportValidationError(
            f"the fine-tuned encoder ranks the held-out persons' next items no better "
            f"(NDCG@10 {before:.4f} -> {after:.4f}); nothing published"
        )
    st.save(str(out))
    return record


def adapt_to_dataset(
    kind: str,
    data: Path | None,
    split: str,
    out: Path,
    spec: AdaptSpec = DEFAULT_SPEC,
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`adapt` on a real dataset's learn-only positives (Amazon: the train users'),
    never its evaluated users' events."""
    from models.evaluation import load_dataset

    dataset = load_dataset(kind, data, split)
    learn_only = [e for e, ev in zip(dataset.events, dataset.evaluated, strict=True) if not ev]
    if not learn_only:
        raise ExportError(
            f"{kind}: every event is evaluated, so there is nothing to fine-tune on without "
            "training on the evaluation stream; use a dataset with a train split"
        )
    record = adapt(dataset.items, learn_only, out, spec, progress)
    return {"dataset": kind, "split_left_out": split, **record}
