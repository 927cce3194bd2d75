"""The ONNX ranking head at serving time (onnxruntime only).

The head scores (person, item, context) triples: ``σ(W·(h_person ⊙ h_item ⊙ h_context) + V·dense)``
where the three representations come from text embeddings, never raw ids, so it scores items
and platforms it has never seen. ``dense`` holds the other signals, in :data:`DENSE_FEATURES`
order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.artifacts import MODEL_FILE, current_dir, read_spec
from models.errors import ModelLoadError

DENSE_FEATURES = ("content", "cross", "context", "covisit", "popularity", "fresh", "river")
#: The graph's inputs: person and context once per request, the rest once per candidate with
#: ``request`` the row of its request (int64).
INPUTS = ("person", "context", "item", "dense", "request")


class RankingHead:
    def __init__(self, model_dir: Path, providers: Sequence[str] | None = None) -> None:
        spec = read_spec(model_dir.parent.parent, model_dir.parent.name, model_dir.name)
        self.version: str = spec["version"]
        self.dense_features: tuple[str, ...] = tuple(spec["dense_features"])
        if self.dense_features != DENSE_FEATURES:
            raise ModelLoadError(
                f"ranker {self.version} expects dense features {self.dense_features}, "
                f"this code computes {DENSE_FEATURES}: re-export the ranker"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # denormal activations would slow the CPU kernels many times over; they change nothing
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        try:
            self._session = ort.InferenceSession(
                str(model_dir / MODEL_FILE),
                sess_options=options,
                providers=list(providers or ["CPUExecutionProvider"]),
            )
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"cannot load ranker {model_dir}: {e}") from e
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

    @classmethod
    def from_artifacts(
        cls, root: Path, version: str | None = None, providers: Sequence[str] | None = None
    ) -> RankingHead:
        return cls(current_dir(root, "ranker", version), providers)

    def score(
        self,
        person: np.ndarray,
        context: np.ndarray,
        item: np.ndarray,
        dense: np.ndarray,
        request: np.ndarray,
    ) -> np.ndarray:
        """``person``/``context``: one row per request; ``item``/``dense``: one per candidate,
        ``request[j]`` the row of candidate ``j``'s request. Returns probabilities, shape [n]."""
        if len(item) == 0:
            return np.zeros(0, dtype=np.float32)
        out = self._session.run(
            ["score"],
            {
                "person": np.ascontiguousarray(person, dtype=np.float32),
                "context": np.ascontiguousarray(context, dtype=np.float32),
                "item": np.ascontiguousarray(item, dtype=np.float32),
                "dense": np.ascontiguousarray(dense, dtype=np.float32),
                "request": np.ascontiguousarray(request, dtype=np.int64),
            },
        )
        scores: np.ndarray = out[0].reshape(-1)
        return scores
