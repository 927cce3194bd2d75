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

from models.artifacts import ITEM_TOWER_FILE, TwoTowerModel

NAME = "sequence"
#: The graph's inputs: ``history`` [batch, length, dim] float32 item vectors (zeros where
#: ``mask`` is false), ``same`` [batch, length] int64 (1: on the ranked platform), ``mask``
#: [batch, length] bool; its output ``query`` is [batch, dim].
INPUTS = ("history", "same", "mask")
__all__ = ["INPUTS", "ITEM_TOWER_FILE", "NAME", "SequenceModel", "arrange", "pack"]


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


class SequenceModel(TwoTowerModel):
    """The sequence model's two graphs (:class:`models.artifacts.TwoTowerModel`)."""

    kind = NAME
    label = "sequence model"
    inputs = INPUTS
    tower_output = "item_vector"

    def _loaded(self) -> None:
        #: how many of a person's last items the model reads: on the ranked platform, and
        #: elsewhere (before them in the slots)
        self.length_same: int = int(self.spec["length_same"])
        self.length_other: int = int(self.spec["length_other"])
        self.length: int = int(self.spec["length"])
        #: the text embeddings' width
        self.dim: int = int(self.input_shapes["history"][-1])

    @staticmethod
    def available(root: Path) -> bool:
        """Whether ``root`` holds a published sequence model (it is optional)."""
        return (root / NAME / "CURRENT").is_file()

    def arrange(self, same: Sequence[int], other: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """See :func:`arrange`."""
        return arrange(same, other, self.length_same, self.length_other)

    def item_vectors(self, items: np.ndarray) -> np.ndarray:
        """The item tower's output for item text vectors ``items`` [n, dim]: [n, dim]."""
        return self._tower(items, self.dim)

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
