"""Small deterministic stand-ins for the ONNX models, for fast unit tests of pure logic.

The real models are exercised by the export and integration tests; these keep the pipeline's
unit tests independent of an export step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pytest

from models.events import Event
from models.pipeline import Pipeline
from models.session import SessionState


class HashingEncoder:
    """Bag of words hashed into ``dim`` buckets: texts sharing words get similar vectors."""

    version = "hashing-test"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace(".", " ").split():
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                out[i, h % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            if norm > 0:
                out[i] /= norm
        return out


class TowerHead:
    """A ranking head of the serving shape with a trivial item tower (the item's first
    ``hidden`` components), which counts how many items it was asked to encode."""

    version = "tower-test"

    def __init__(self, hidden: int = 4) -> None:
        self.hidden = hidden
        self.encoded = 0

    def item_hidden(self, items: np.ndarray) -> np.ndarray:
        self.encoded += len(items)
        return np.tanh(items[:, : self.hidden]).astype(np.float32)

    def score(
        self,
        person: np.ndarray,
        context: np.ndarray,
        item_hidden: np.ndarray,
        dense: np.ndarray,
        request: np.ndarray,
    ) -> np.ndarray:
        logit = (item_hidden * person[request, : self.hidden]).sum(axis=1) + dense[:, 0]
        return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


class RecordingSequence:
    """A sequence model of the serving shape: its item tower rolls a vector by one component,
    its query is the rolled sum of the history's same-platform items; it keeps the histories
    it was given."""

    version = "sequence-test"

    def __init__(self, length_same: int = 3, length_other: int = 2) -> None:
        self.length_same = length_same
        self.length_other = length_other
        self.calls: list[tuple[list[np.ndarray], list[np.ndarray]]] = []

    def arrange(self, same: Sequence[int], other: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        from models.sequence import arrange

        return arrange(same, other, self.length_same, self.length_other)

    def item_vectors(self, items: np.ndarray) -> np.ndarray:
        return np.roll(items, 1, axis=1).astype(np.float32)

    def queries(self, histories: Sequence[np.ndarray], same: Sequence[np.ndarray]) -> np.ndarray:
        self.calls.append((list(histories), list(same)))
        return np.stack(
            [
                np.roll((h * np.asarray(f, np.float32)[:, None]).sum(axis=0), 1)
                for h, f in zip(histories, same, strict=True)
            ]
        ).astype(np.float32)


def fail_learning_for(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline, person: str) -> None:
    """Make ``pipeline.learn`` raise for ``person`` (a bug, not bad input) and work for
    everyone else."""
    learn = pipeline.learn

    def failing(who: str, event: Event, session: SessionState) -> None:
        if who == person:
            raise RuntimeError("a bug, not bad input")
        learn(who, event, session)

    monkeypatch.setattr(pipeline, "learn", failing)
