"""The ONNX ranking head at serving time (onnxruntime only).

The head scores (person, item, context) triples: ``σ(W·(h_person ⊙ h_item ⊙ h_context) + V·dense)``
where the three representations come from text embeddings, never raw ids, so it scores items
and platforms it has never seen. ``dense`` holds the other signals, in :data:`DENSE_FEATURES`
order.

It is served as two graphs, the classic two-tower split: the item tower
``h_item = tanh(W_item · item + b)`` depends on the item alone, so it runs once per item
(:meth:`RankingHead.item_hidden`, cached per catalog row by the pipeline) instead of once per
candidate, and the scorer takes its output.
"""

from __future__ import annotations

import numpy as np

from models.artifacts import ITEM_TOWER_FILE, TwoTowerModel

DENSE_FEATURES = ("content", "cross", "context", "covisit", "popularity", "fresh", "river")
#: The scorer's inputs: person and context once per request, the rest once per candidate with
#: ``request`` the row of its request (int64); ``item_hidden`` is the item tower's output.
INPUTS = ("person", "context", "item_hidden", "dense", "request")
__all__ = ["DENSE_FEATURES", "INPUTS", "ITEM_TOWER_FILE", "RankingHead"]


class RankingHead(TwoTowerModel):
    """The head's two graphs (:class:`models.artifacts.TwoTowerModel`). A replay running beside
    others takes ``threads=1``: with the threads' default (and the reranker's fits on both
    cores) two side-by-side MovieLens replays ran ~700 events/s each, with one thread ~960."""

    kind = "ranker"
    label = "ranker"
    inputs = INPUTS
    tower_output = "item_hidden"

    def _check_spec(self) -> None:
        self.dense_features: tuple[str, ...] = tuple(self.spec["dense_features"])
        if self.dense_features != DENSE_FEATURES:
            raise self._stale(
                f"expects dense features {self.dense_features}, this code computes {DENSE_FEATURES}"
            )

    def _loaded(self) -> None:
        if self.input_shapes["dense"][-1] != len(DENSE_FEATURES):
            raise self._stale(
                f"has a 'dense' input {self.input_shapes['dense']}, this code passes "
                f"{len(DENSE_FEATURES)} features"
            )
        self.dim: int = int(self.input_shapes["person"][-1])  # the text embeddings' width
        #: width of :meth:`item_hidden`'s rows
        self.hidden: int = int(self.input_shapes["item_hidden"][-1])

    def item_hidden(self, items: np.ndarray) -> np.ndarray:
        """The item tower's output for item embeddings ``items`` [n, dim]: [n, hidden]."""
        return self._tower(items, self.hidden)

    def score(
        self,
        person: np.ndarray,
        context: np.ndarray,
        item_hidden: np.ndarray,
        dense: np.ndarray,
        request: np.ndarray,
    ) -> np.ndarray:
        """``person``/``context``: one row per request; ``item_hidden`` (:meth:`item_hidden`)
        and ``dense``: one per candidate, ``request[j]`` the row of candidate ``j``'s request.
        Returns probabilities, shape [n]."""
        if len(item_hidden) == 0:
            return np.zeros(0, dtype=np.float32)
        out = self._session.run(
            ["score"],
            {
                "person": np.ascontiguousarray(person, dtype=np.float32),
                "context": np.ascontiguousarray(context, dtype=np.float32),
                "item_hidden": np.ascontiguousarray(item_hidden, dtype=np.float32),
                "dense": np.ascontiguousarray(dense, dtype=np.float32),
                "request": np.ascontiguousarray(request, dtype=np.int64),
            },
        )
        scores: np.ndarray = out[0].reshape(-1)
        return scores
