"""The sequence model at serving time (onnxruntime only): where a person goes next.

A query vector from the person's last items, oldest first, each flagged *same* (on the
platform being ranked) or not: attention pooling over the history (the position from the end
and the flag are learned embeddings) adds a learned residual to the sum of the same-platform
items. Trained with a sampled softmax over the target platform's items (:mod:`export.sequence`)
it sees text vectors only, never ids, so it serves items and people it has never seen.

Two graphs, like the ranking head's: the item tower maps an item's text vector to the unit
vector the queries are matched with (``normalize(e + W·e + b)``: without that learned map the
model ranked Amazon's next items at half the NDCG), once per catalog row; an item's score is
``item_vector · query``.

Histories are packed right-aligned into ``length`` slots (:func:`pack`); without consent
the caller passes same-platform items only (the model was trained with such histories too).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.artifacts import MODEL_FILE, current_dir, load_sessions, read_spec
from models.errors import ModelLoadError

NAME = "sequence"
#: The graph's inputs: ``history`` [batch, length, dim] float32 item vectors (zeros where
#: ``mask`` is false), ``same`` [batch, length] int64 (1: on the ranked platform), ``mask``
#: [batch, length] bool; its output ``query`` is [batch, dim].
INPUTS = ("history", "same", "mask")
#: The item tower's graph, beside the query's :data:`MODEL_FILE`: ``item`` -> ``item_vector``.
ITEM_TOWER_FILE = "item_tower.onnx"


def pack(
    histories: Sequence[np.ndarray], same: Sequence[np.ndarray], length: int, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph's inputs for histories of item vectors ([n_i, dim], oldest first) with their
    same-platform flags ([n_i]): the last ``length`` of each, right-aligned. An empty history
    gets one unmasked zero slot, so attention always has something to pool.

    Examples
    --------
    >>> import numpy as np
    >>> h, s, m = pack([np.ones((3, 2)), np.zeros((0, 2))], [np.array([1, 0, 1]), []], 2, 2)
    >>> h.shape, s.tolist(), m.tolist()
    ((2, 2, 2), [[0, 1], [0, 0]], [[True, True], [False, True]])
    """
    batch = len(histories)
    history = np.zeros((batch, length, dim), dtype=np.float32)
    flags = np.zeros((batch, length), dtype=np.int64)
    mask = np.zeros((batch, length), dtype=bool)
    for b, (vectors, is_same) in enumerate(zip(histories, same, strict=True)):
        n = min(len(vectors), length)
        if n:
            history[b, length - n :] = vectors[-n:]
            flags[b, length - n :] = np.asarray(is_same)[-n:]
            mask[b, length - n :] = True
    mask[:, -1] = True  # padding slots are zeros: an empty history pools one zero vector
    return history, flags, mask


def arrange(
    same: Sequence[int], other: Sequence[int], length_same: int, length_other: int
) -> tuple[np.ndarray, np.ndarray]:
    """Catalog rows in slot order and their flags, from the rows of a person's items on the
    ranked platform and elsewhere (each oldest first): the last ``length_other`` of ``other``,
    then the last ``length_same`` of ``same``, as the model was trained.

    Examples
    --------
    >>> rows, flags = arrange([1, 2, 3], [7, 8, 9], length_same=2, length_other=1)
    >>> rows.tolist(), flags.tolist()
    ([9, 2, 3], [0, 1, 1])
    """
    other = list(other)[-length_other:] if length_other else []
    same = list(same)[-length_same:] if length_same else []
    rows = np.array([*other, *same], dtype=np.int64)
    flags = np.array([0] * len(other) + [1] * len(same), dtype=np.int64)
    return rows, flags


class SequenceModel:
    def __init__(
        self,
        model_dir: Path,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        spinning: bool = True,
    ) -> None:
        spec = read_spec(model_dir.parent.parent, model_dir.parent.name, model_dir.name)
        self.version: str = spec["version"]
        #: the encoder whose vectors it was trained on: another one's are meaningless to it
        self.encoder_version: str | None = spec.get("encoder_version")
        sessions = load_sessions(
            model_dir, (MODEL_FILE, ITEM_TOWER_FILE), providers, threads, spinning
        )
        self._session, self._item_tower = sessions
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        if set(inputs) != set(INPUTS):
            raise ModelLoadError(
                f"sequence model {self.version} takes inputs {sorted(inputs)}, this code "
                f"passes {sorted(INPUTS)}: re-export it"
            )
        #: how many of a person's last items the model reads: on the ranked platform, and
        #: elsewhere (before them in the slots)
        self.length_same: int = int(spec["length_same"])
        self.length_other: int = int(spec["length_other"])
        self.length: int = int(spec["length"])
        #: the text embeddings' width
        self.dim: int = int(inputs["history"][-1])

    @classmethod
    def from_artifacts(
        cls,
        root: Path,
        version: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        spinning: bool = True,
    ) -> SequenceModel:
        return cls(current_dir(root, NAME, version), providers, threads, spinning)

    def check_encoder(self, encoder_version: str) -> SequenceModel:
        """Itself if it was trained on ``encoder_version``'s vectors, else a clear error."""
        if self.encoder_version != encoder_version:
            raise ModelLoadError(
                f"sequence model {self.version} was trained on {self.encoder_version}'s vectors, "
                f"the catalog is encoded by {encoder_version}: re-export it"
            )
        return self

    @staticmethod
    def available(root: Path) -> bool:
        """Whether ``root`` holds a published sequence model (it is optional)."""
        return (root / NAME / "CURRENT").is_file()

    def arrange(self, same: Sequence[int], other: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """See :func:`arrange`."""
        return arrange(same, other, self.length_same, self.length_other)

    def item_vectors(self, items: np.ndarray) -> np.ndarray:
        """The item tower's output for item text vectors ``items`` [n, dim]: [n, dim]."""
        if len(items) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out: np.ndarray = self._item_tower.run(
            ["item_vector"], {"item": np.ascontiguousarray(items, dtype=np.float32)}
        )[0]
        return out

    def queries(self, histories: Sequence[np.ndarray], same: Sequence[np.ndarray]) -> np.ndarray:
        """One query per history (see :func:`pack`): [batch, dim]; an item's score is
        ``item_vectors(item) @ query``."""
        if not histories:
            return np.zeros((0, self.dim), dtype=np.float32)
        history, flags, mask = pack(histories, same, self.length, self.dim)
        out: np.ndarray = self._session.run(
            ["query"], {"history": history, "same": flags, "mask": mask}
        )[0]
        return out
