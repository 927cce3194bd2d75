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

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.artifacts import MODEL_FILE, current_dir, load_sessions, read_spec
from models.errors import ModelLoadError

DENSE_FEATURES = ("content", "cross", "context", "covisit", "popularity", "fresh", "river")
#: The scorer's inputs: person and context once per request, the rest once per candidate with
#: ``request`` the row of its request (int64); ``item_hidden`` is the item tower's output.
INPUTS = ("person", "context", "item_hidden", "dense", "request")
#: The item tower's graph, beside the scorer's :data:`MODEL_FILE`: ``item`` -> ``item_hidden``.
ITEM_TOWER_FILE = "item_tower.onnx"


class RankingHead:
    def __init__(
        self,
        model_dir: Path,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        spinning: bool = True,
    ) -> None:
        """``threads``: ONNX Runtime's intra-op threads (0: one per core). A replay running
        beside others takes 1: with the threads' default (and the reranker's fits on both
        cores) two side-by-side MovieLens replays ran ~700 events/s each, with one thread
        ~960. ``spinning``: see :func:`models.artifacts.session_options`."""
        spec = read_spec(model_dir.parent.parent, model_dir.parent.name, model_dir.name)
        self.version: str = spec["version"]
        #: the encoder whose vectors it was trained on
        self.encoder_version: str | None = spec.get("encoder_version")
        self.dense_features: tuple[str, ...] = tuple(spec["dense_features"])
        if self.dense_features != DENSE_FEATURES:
            raise ModelLoadError(
                f"ranker {self.version} expects dense features {self.dense_features}, "
                f"this code computes {DENSE_FEATURES}: re-export the ranker"
            )
        if not (model_dir / ITEM_TOWER_FILE).is_file():
            raise ModelLoadError(
                f"ranker {self.version} has no {ITEM_TOWER_FILE} (exported before the item "
                "tower was split off): re-export the ranker"
            )
        sessions = load_sessions(
            model_dir, (MODEL_FILE, ITEM_TOWER_FILE), providers, threads, spinning
        )
        self._session, self._item_tower = sessions
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        if set(inputs) != set(INPUTS):
            raise ModelLoadError(
                f"ranker {self.version} takes inputs {sorted(inputs)}, this code passes "
                f"{sorted(INPUTS)}: re-export the ranker"
            )
        if inputs["dense"][-1] != len(DENSE_FEATURES):
            raise ModelLoadError(
                f"ranker {self.version}: its 'dense' input is {inputs['dense']}, "
                f"this code passes {len(DENSE_FEATURES)} features: re-export the ranker"
            )
        self.dim: int = int(inputs["person"][-1])  # the text embeddings' width
        #: width of :meth:`item_hidden`'s rows
        self.hidden: int = int(inputs["item_hidden"][-1])

    @classmethod
    def from_artifacts(
        cls,
        root: Path,
        version: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        spinning: bool = True,
    ) -> RankingHead:
        return cls(current_dir(root, "ranker", version), providers, threads, spinning)

    def check_encoder(self, encoder_version: str) -> RankingHead:
        """Itself if it was trained on ``encoder_version``'s vectors, else a clear error."""
        if self.encoder_version != encoder_version:
            raise ModelLoadError(
                f"ranker {self.version} was trained on {self.encoder_version}'s vectors, the "
                f"catalog is encoded by {encoder_version}: re-export the ranker"
            )
        return self

    def item_hidden(self, items: np.ndarray) -> np.ndarray:
        """The item tower's output for item embeddings ``items`` [n, dim]: [n, hidden]."""
        if len(items) == 0:
            return np.zeros((0, self.hidden), dtype=np.float32)
        out: np.ndarray = self._item_tower.run(
            ["item_hidden"], {"item": np.ascontiguousarray(items, dtype=np.float32)}
        )[0]
        return out

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
