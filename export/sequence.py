"""Train the sequence model on people's item sequences, export it to ONNX, validate, publish.

Two graphs, served by :class:`models.sequence.SequenceModel`: the query (a person's last
``length`` items → a unit vector) and the item tower (an item's text vector → a unit vector,
``normalize(e + W·e + b)``, computed once per catalog row). Training: for every position of
every training person's sequence of positives, the history before it predicts the item; a
sampled softmax over that item's platform (the batch's targets plus ``negatives`` random items
of the platform) at temperature ``temperature``. A share of the histories lose their other
platforms' items (people without consent are served that way). An item the person already
consumed is never a target: serving never ranks it. Early stopping on NDCG@10 of the dev
persons' last item per platform, ranked against the whole platform minus what they consumed;
the same on other persons (test), used for nothing else, is what is reported.

By default the sequences come from :class:`models.simulator.World` (what the project ships);
``dataset`` trains on a real dataset's learn-only events (Amazon: the train users), for
evaluation on that dataset's other users.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.common import export_item_tower, require_torch, staging, two_tower_record
from models.artifacts import MODEL_FILE, publish
from models.encoder import TextEncoder
from models.errors import ExportError, ExportValidationError
from models.events import CONSUMED_EVENTS, CatalogItem, Event, item_key
from models.identity import route
from models.pipeline import PersonEvent
from models.sequence import INPUTS, ITEM_TOWER_FILE, NAME, pack


@dataclass(frozen=True)
class SequenceExportSpec:
    opset: int = 17
    atol: float = 1e-5
    length_same: int = 15  # the query reads the last items on the ranked platform
    length_other: int = 5  # and the last items elsewhere (with consent)
    hidden: int = 128
    heads: int = 4
    temperature: float = 0.07
    negatives: int = 4096  # sampled from the target's platform per batch
    batch: int = 1024
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    drop_other_share: float = 0.2  # histories trained without other platforms' items
    epochs: int = 30
    patience: int = 3
    dev_persons: float = 0.1  # share of persons kept for early stopping
    test_persons: float = 0.1  # ...and for the reported figures
    persons: int = 1200  # simulator only
    events_per_person: int = 25  # simulator only
    seed: int = 0
    validation_batches: tuple[int, ...] = (1, 5, 77)  # the export uses 3

    @property
    def length(self) -> int:
        return self.length_same + self.length_other


DEFAULT_SPEC = SequenceExportSpec()


@dataclass(frozen=True)
class Sequences:
    """Training input: item vectors [n, dim], each item's platform index [n], each
    person's positives as item rows, in time order, and whether each consumed the item."""

    vectors: np.ndarray
    platform: np.ndarray
    persons: list[np.ndarray]
    platforms: list[str]
    consumed: list[np.ndarray]  # per person, per position (bool)


def sequences_from(
    keyed: Iterable[tuple[str, str, bool]], items: Sequence[CatalogItem], vectors: np.ndarray
) -> Sequences:
    """``keyed``: (person, item key, consumed?) of positives in time order; ``items`` /
    ``vectors``: the catalog. Items outside the catalog are skipped."""
    platforms = sorted({it.platform for it in items})
    row = {it.key: i for i, it in enumerate(items)}
    plat = np.array([platforms.index(it.platform) for it in items], dtype=np.int64)
    by_person: dict[str, tuple[list[int], list[bool]]] = {}
    for person, key, consumed in keyed:
        if key in row:
            rows, flags = by_person.setdefault(person, ([], []))
            rows.append(row[key])
            flags.append(consumed)
    kept = [(r, f) for r, f in by_person.values() if len(r) > 1]
    return Sequences(
        vectors.astype(np.float32),
        plat,
        [np.array(r, dtype=np.int64) for r, _ in kept],
        platforms,
        [np.array(f, dtype=bool) for _, f in kept],
    )


def rankable(items: np.ndarray, consumed: np.ndarray) -> np.ndarray:
    """Per position: could serving have ranked this item then (not consumed before it)?

    Examples
    --------
    >>> rankable(np.array([3, 5, 3, 5, 3]), np.array([False, True, True, False, False]))
    array([ True,  True,  True, False, False])
    """
    out = np.ones(len(items), dtype=bool)
    gone: set[int] = set()
    for t, (item, used) in enumerate(zip(items.tolist(), consumed.tolist(), strict=True)):
        out[t] = item not in gone
        if used:
            gone.add(item)
    return out


def simulator_sequences(encoder: TextEncoder, spec: SequenceExportSpec) -> Sequences:
    from models.simulator import World

    world = World(seed=spec.seed)
    items = [CatalogItem.model_validate(it) for it in world.items]
    vectors = encoder.encode([it.text() for it in items])
    identities: dict[str, str] = {}
    keyed = [
        (
            msg.person,
            item_key(msg.event.platform, msg.event.item),
            msg.event.type in CONSUMED_EVENTS,
        )
        for raw in world.events(spec.persons, spec.events_per_person, start_ts=1.7e9)
        for msg in route(Event.model_validate(raw), identities)
        if isinstance(msg, PersonEvent) and msg.event.item is not None and msg.event.is_positive
    ]
    return sequences_from(keyed, items, vectors)


def dataset_sequences(
    encoder: TextEncoder, kind: str, data: Path | None, split: str, progress: bool
) -> Sequences:
    """A real dataset's learn-only positives (Amazon: the train users'), never its evaluated
    users' events."""
    from models.evaluation import embed_items, load_dataset

    dataset = load_dataset(kind, data, split)
    if all(dataset.evaluated):
        raise ExportError(
            f"{kind}: every event is evaluated, so there is nothing to train on without "
            "training on the evaluation stream; use a dataset with a train split"
        )
    vectors = embed_items(dataset, encoder, Path(".cache/embeddings"), progress)
    keyed = (
        (e.user, item_key(e.platform, e.item), e.type in CONSUMED_EVENTS)
        for e, evaluated in zip(dataset.events, dataset.evaluated, strict=True)
        if not evaluated and e.item is not None and e.is_positive
    )
    return sequences_from(keyed, dataset.items, vectors)


def build_model(spec: SequenceExportSpec, dim: int) -> Any:
    torch = require_torch()
    nn = torch.nn
    functional = torch.nn.functional

    class SequenceNet(nn.Module):  # type: ignore[name-defined]
        """Attention pooling over the history; the same-platform sum plus a learned residual."""

        def __init__(self) -> None:
            super().__init__()
            self.adapter = nn.Linear(dim, spec.hidden)
            self.position = nn.Embedding(spec.length, spec.hidden)  # 0: the newest slot
            self.same = nn.Embedding(2, spec.hidden)
            self.attention = nn.Linear(spec.hidden, spec.heads)
            self.mlp = nn.Sequential(
                nn.Linear(spec.hidden * spec.heads, 2 * spec.hidden), nn.GELU(), nn.Dropout(0.1)
            )
            # zero-initialised: training starts from the same-platform sum and the raw text
            self.out = nn.Linear(2 * spec.hidden, dim)
            self.item_residual = nn.Linear(dim, dim)
            for layer in (self.out, self.item_residual):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            self.register_buffer(
                "positions", torch.arange(spec.length - 1, -1, -1), persistent=False
            )

        def items(self, item: Any) -> Any:
            return functional.normalize(item + self.item_residual(item), dim=-1)

        def forward(self, history: Any, same: Any, mask: Any) -> Any:
            x = torch.tanh(self.adapter(history) + self.position(self.positions) + self.same(same))
            scores = self.attention(x).masked_fill(~mask.unsqueeze(-1), -1e9)
            weights = scores.softmax(dim=1)  # [batch, length, heads]
            pooled = (weights.unsqueeze(-1) * x.unsqueeze(2)).sum(dim=1).flatten(1)
            own = (mask & (same == 1)).to(history.dtype).unsqueeze(-1)
            base = (history * own).sum(dim=1)
            return functional.normalize(base + self.out(self.mlp(pooled)) + 1e-6, dim=-1)

    return SequenceNet()


def grouped(
    prior: np.ndarray, platform: np.ndarray, target: int, spec: SequenceExportSpec
) -> np.ndarray:
    """The slots the query reads for an item on platform ``target`` after rows ``prior``: the
    last ``length_other`` items of other platforms, then the last ``length_same`` of this one,
    right-aligned, -1 where empty (what serving builds from a session's per-platform lists)."""
    on = platform[prior] == target
    other, same = prior[~on][-spec.length_other :], prior[on][-spec.length_same :]
    pad = np.full(spec.length - len(other) - len(same), -1, np.int64)
    return np.concatenate([pad, other, same]).astype(np.int64)


def _examples(
    seqs: Sequences, persons: Sequence[int], spec: SequenceExportSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Every (slots before t, row at t) of every person, where serving could rank row t."""
    histories, targets = [], []
    for i in persons:
        s, ok = seqs.persons[i], rankable(seqs.persons[i], seqs.consumed[i])
        for t in range(1, len(s)):
            if ok[t]:
                histories.append(grouped(s[:t], seqs.platform, seqs.platform[s[t]], spec))
                targets.append(s[t])
    return np.array(histories, dtype=np.int64).reshape(-1, spec.length), np.array(targets, np.int64)


def _leave_last(
    seqs: Sequences, persons: Sequence[int]
) -> list[tuple[np.ndarray, int, np.ndarray]]:
    """Each person's last item on each platform (unless they had consumed it before), with
    everything before it as history, and what they had consumed (not ranked)."""
    out = []
    for i in persons:
        s, consumed = seqs.persons[i], seqs.consumed[i]
        ok = rankable(s, consumed)
        for p in np.unique(seqs.platform[s]):
            t = int(np.flatnonzero(seqs.platform[s] == p)[-1])
            if t > 0 and ok[t]:
                out.append((s[:t], int(s[t]), s[:t][consumed[:t]]))
    return out


def _inputs(seqs: Sequences, rows: np.ndarray, target_platform: np.ndarray) -> tuple[Any, ...]:
    """The graph's inputs (as torch tensors) for padded history rows (-1: empty)."""
    torch = require_torch()
    mask = rows >= 0
    safe = np.maximum(rows, 0)
    same = mask & (seqs.platform[safe] == target_platform[:, None])
    history = np.where(mask[..., None], seqs.vectors[safe], 0.0).astype(np.float32)
    mask[:, -1] = True
    return (
        torch.from_numpy(history),
        torch.from_numpy(same.astype(np.int64)),
        torch.from_numpy(mask),
    )


def ndcg_at_10(
    model: Any,
    seqs: Sequences,
    cases: list[tuple[np.ndarray, int, np.ndarray]],
    spec: SequenceExportSpec,
) -> dict[str, float]:
    """Per platform: NDCG@10 of each case's target against its platform minus what the
    person consumed (as serving ranks)."""
    torch = require_torch()
    gains: dict[str, list[float]] = {p: [] for p in seqs.platforms}
    if not cases:
        return {}
    model.eval()
    with torch.no_grad():
        items = model.items(torch.from_numpy(seqs.vectors)).numpy()
        for start in range(0, len(cases), 512):
            chunk = cases[start : start + 512]
            target_platform = np.array([seqs.platform[t] for _, t, _ in chunk])
            rows = np.stack(
                [
                    grouped(h, seqs.platform, p, spec)
                    for (h, _, _), p in zip(chunk, target_platform, strict=True)
                ]
            )
            queries = model(*_inputs(seqs, rows, target_platform)).numpy()
            scores = queries @ items.T
            for b, (_, t, consumed) in enumerate(chunk):
                row = scores[b]
                row[seqs.platform != seqs.platform[t]] = -np.inf
                row[consumed] = -np.inf  # the target is not among them (see _leave_last)
                rank = int((row > row[t]).sum()) + 1
                gains[seqs.platforms[seqs.platform[t]]].append(
                    1 / math.log2(rank + 1) if rank <= 10 else 0.0
                )
    model.train()
    return {p: round(float(np.mean(g)), 4) for p, g in gains.items() if g}


def train(
    seqs: Sequences, spec: SequenceExportSpec, progress: bool = False
) -> tuple[Any, dict[str, Any]]:
    torch = require_torch()
    functional = torch.nn.functional
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(seqs.persons)).tolist()
    n_dev = max(1, int(len(order) * spec.dev_persons))
    n_test = max(1, int(len(order) * spec.test_persons))
    if len(order) - n_dev - n_test < 1:
        raise ExportError(f"{len(seqs.persons)} persons with 2+ positives: too few to train on")
    dev, test, fit = order[:n_dev], order[n_dev : n_dev + n_test], order[n_dev + n_test :]
    histories, targets = _examples(seqs, fit, spec)
    if not len(targets):
        raise ExportError("no positive of the training persons is one serving could rank")
    target_platform = seqs.platform[targets]
    dev_cases = _leave_last(seqs, dev)
    test_cases = _leave_last(seqs, test)
    model = build_model(spec, seqs.vectors.shape[1])
    test_untrained = ndcg_at_10(model, seqs, test_cases, spec)
    platform_rows = [np.flatnonzero(seqs.platform == p) for p in range(len(seqs.platforms))]
    vectors = torch.from_numpy(seqs.vectors)
    opt = torch.optim.AdamW(
        model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay
    )

    def score(d: dict[str, float]) -> float:
        return float(np.mean(list(d.values()))) if d else 0.0

    start = ndcg_at_10(model, seqs, dev_cases, spec)
    best, best_state, bad, history = score(start), None, 0, []
    for epoch in range(spec.epochs):
        steps = []
        for p in range(len(seqs.platforms)):  # one platform per batch: one softmax's items
            idx = rng.permutation(np.flatnonzero(target_platform == p))
            steps += [idx[s : s + spec.batch] for s in range(0, len(idx), spec.batch)]
        total = 0.0
        for b in (steps[i] for i in rng.permutation(len(steps))):
            p = int(target_platform[b[0]])
            rows = histories[b].copy()
            drop = rng.random(len(b)) < spec.drop_other_share
            other = (rows >= 0) & (seqs.platform[np.maximum(rows, 0)] != p)
            rows[drop[:, None] & other] = -1
            query = model(*_inputs(seqs, rows, np.full(len(b), p)))
            pool = platform_rows[p]
            sampled = rng.choice(pool, min(spec.negatives, len(pool)), replace=False)
            candidates = np.unique(np.concatenate([targets[b], sampled]))
            logits = query @ model.items(vectors[candidates]).T / spec.temperature
            labels = torch.from_numpy(np.searchsorted(candidates, targets[b]))
            loss = functional.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        d = ndcg_at_10(model, seqs, dev_cases, spec)
        history.append(d)
        if progress:
            print(
                f"  epoch {epoch + 1}/{spec.epochs}: loss {total / len(targets):.3f}, "
                f"dev NDCG@10 {d}",
                flush=True,
            )
        if score(d) > best + 1e-4:
            best, bad = score(d), 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= spec.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    metrics = {
        "persons": {"fit": len(fit), "dev": len(dev), "test": len(test)},
        "examples": len(targets),
        "dev_ndcg10_per_epoch": history,
        "dev_ndcg10": ndcg_at_10(model, seqs, dev_cases, spec),
        "test_ndcg10_untrained": test_untrained,
        "test_ndcg10": ndcg_at_10(model, seqs, test_cases, spec),
        "epochs_run": len(history),
    }
    return model, metrics


def _graphs(model: Any) -> tuple[Any, Any]:
    torch = require_torch()

    class Query(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, history: Any, same: Any, mask: Any) -> Any:
            return self.net(history, same, mask)

    class ItemTower(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, item: Any) -> Any:
            return self.net.items(item)

    return Query().eval(), ItemTower().eval()


def export_sequence(
    artifacts_root: Path,
    spec: SequenceExportSpec = DEFAULT_SPEC,
    progress: bool = True,
    dataset: str | None = None,
    data_dir: Path | None = None,
    split: str = "valid_F2.txt",
) -> str:
    """Train, export, validate against torch on unseen batch sizes, publish; returns the version."""
    torch = require_torch()
    torch.set_num_threads(2)
    started = time.time()
    encoder = TextEncoder.from_artifacts(artifacts_root)
    if dataset is None:
        seqs = simulator_sequences(encoder, spec)
        source = "models.simulator.World positives"
    else:
        seqs = dataset_sequences(encoder, dataset, data_dir, split, progress)
        source = f"{dataset} learn-only positives (users of {split} excluded)"
    dim = seqs.vectors.shape[1]
    model, metrics = train(seqs, spec, progress)
    query_graph, tower_graph = _graphs(model)
    with staging(artifacts_root, NAME) as staged:
        example = pack(
            [seqs.vectors[s[:5]] for s in seqs.persons[:3]],
            [np.ones(5, np.int64)] * 3,
            spec.length,
            dim,
        )
        torch.onnx.export(
            query_graph,
            tuple(torch.from_numpy(x) for x in example),
            str(staged / MODEL_FILE),
            input_names=list(INPUTS),
            output_names=["query"],
            dynamic_axes={name: {0: "batch"} for name in (*INPUTS, "query")},
            opset_version=spec.opset,
            dynamo=False,
        )
        export_item_tower(
            tower_graph, torch.from_numpy(seqs.vectors[:3]), staged, "item_vector", spec.opset
        )
        diffs = _validate(model, staged, spec, seqs)
        spec_dict = {
            **asdict(spec),
            "kind": "sequence",
            "length": spec.length,
            "inputs": {
                "history": ["batch", spec.length, dim],
                "same": ["batch", spec.length],
                "mask": ["batch", spec.length],
            },
            **two_tower_record(dim, diffs, metrics, encoder.version, source, started),
        }
        version = publish(artifacts_root, NAME, staged, spec_dict)
    if progress:
        print(
            f"sequence {version}: test NDCG@10 {metrics['test_ndcg10']} (untrained "
            f"{metrics['test_ndcg10_untrained']}), max |onnx-torch| {max(diffs.values()):.2e}"
        )
    return version


def _validate(
    model: Any, staged: Path, spec: SequenceExportSpec, seqs: Sequences
) -> dict[str, float]:
    """Both ONNX graphs vs torch on batch sizes the export did not use, real histories of
    uneven lengths (some empty)."""
    torch = require_torch()
    import onnxruntime as ort

    query = ort.InferenceSession(str(staged / MODEL_FILE), providers=["CPUExecutionProvider"])
    tower = ort.InferenceSession(str(staged / ITEM_TOWER_FILE), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(123)
    dim = seqs.vectors.shape[1]
    diffs = {}
    for batch in spec.validation_batches:
        persons = [seqs.persons[i] for i in rng.integers(0, len(seqs.persons), batch)]
        cut = [s[: rng.integers(0, len(s) + 1)] for s in persons]
        same = [rng.integers(0, 2, len(s)) for s in cut]
        inputs = pack([seqs.vectors[s] for s in cut], same, spec.length, dim)
        items = seqs.vectors[rng.integers(0, len(seqs.vectors), batch)]
        with torch.no_grad():
            ref_query = model(*(torch.from_numpy(x) for x in inputs)).numpy()
            ref_items = model.items(torch.from_numpy(items)).numpy()
        got_query = query.run(["query"], dict(zip(INPUTS, inputs, strict=True)))[0]
        got_items = tower.run(["item_vector"], {"item": items})[0]
        diff = float(
            max(np.max(np.abs(got_query - ref_query)), np.max(np.abs(got_items - ref_items)))
        )
        diffs[f"batch_{batch}"] = diff
        if diff > spec.atol:
            raise ExportValidationError(
                f"sequence ONNX differs from torch at batch {batch}: "
                f"max abs diff {diff:.3e} > atol {spec.atol:.0e}"
            )
    return diffs


__all__ = ["DEFAULT_SPEC", "SequenceExportSpec", "export_sequence"]
