"""EASE: item-item weights in closed form (Steck, "Embarrassingly Shallow Autoencoders for
Sparse Data", WWW 2019), one model per platform, refitted as the stream grows.

With ``X`` the people × items matrix of a platform's positives, ``P = (XᵀX + λI)⁻¹`` and
``B = I − P·diag(1/diag P)`` (its diagonal then set to 0), a person's score of item ``j`` is
``Σ_{i ∈ their items} B[i, j]``: a ridge regression of every item on all the others at once,
so each item's weight is what it adds to what the others already say. Fitted offline on
Amazon Arts ↔ Office it was the strongest single model measured on the leave-last-out split
(see docs/evaluation.md).

The inverse costs ``O(n³)`` in the items kept, so a fit keeps a platform's ``max_items``
most popular items with at least ``min_count`` people each, and a platform is refitted only
once its positives have grown by ``refit_growth`` since its last fit: the number of fits is
logarithmic in the stream's length. A fit happens inside :meth:`Ease.learn_one`, on the
caller's thread, so a replay is reproducible. It serves as the ``ease`` baseline
(:class:`models.recommenders.EaseBaseline`); as a blend signal it changed nothing measurable.

Examples
--------
>>> ease = Ease(l2=1.0, min_count=1, first_fit=1)
>>> for person, items in {"ann": ["a", "b"], "bob": ["a", "b", "c"], "cy": ["c", "d"],
...                       "dee": ["c", "d"], "eve": ["a", "b"]}.items():
...     for item in items:
...         ease.learn_one(person, "shop:" + item, "shop")
>>> found = ease.candidate_ids_many([["shop:a"]], "shop", n=3)[0]
>>> [ease.keys[i] for i in found.ids]
['shop:b', 'shop:c']
>>> float(found.scores[0])
1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from models.errors import ConfigError, ModelFitError
from models.signals import _EMPTY, Neighbours, _ItemIds

__all__ = ["Ease"]


@dataclass(frozen=True)
class _Fit:
    """One platform's fitted weights: ``weights[a, b]`` is ``B[items[a], items[b]]``."""

    items: np.ndarray  # item ids, by column
    column: dict[int, int]  # item id → its column
    weights: np.ndarray  # float32, zero diagonal


class Ease(_ItemIds):
    """EASE per platform over the people's positives; candidates for a history by the summed
    rows of its items (:class:`models.signals.Neighbours`: scaled so the best is 1, the best's
    own score as the strength).

    ``l2``: the ridge penalty λ (on Amazon Arts ↔ Office 50-200 did about as well);
    ``min_count``: the fewest people an item needs to be fitted; ``max_items``: the most
    items one fit keeps (the most popular; its cost grows with the cube); ``first_fit``: the
    platform's positives before the first fit; ``refit_growth``: the share they grow by
    before the next; ``per_person``: each person's latest items kept per platform.
    """

    def __init__(
        self,
        l2: float = 100.0,
        min_count: int = 3,
        max_items: int = 6000,
        first_fit: int = 1000,
        refit_growth: float = 0.25,
        per_person: int = 200,
    ) -> None:
        if l2 <= 0.0:
            raise ConfigError(f"l2={l2!r}: the inverse needs a positive ridge penalty")
        if refit_growth <= 0.0:
            raise ConfigError(f"refit_growth={refit_growth!r}: expected a share above 0")
        super().__init__()
        self.l2 = l2
        self.min_count = min_count
        self.max_items = max_items
        self.first_fit = first_fit
        self.refit_growth = refit_growth
        self.per_person = per_person
        self._people: dict[str, dict[str, list[int]]] = {}  # platform → person → item ids
        self._people_with = np.zeros(64, np.int64)  # item id → how many people have it
        self._positives: dict[str, int] = {}  # platform → positives learned
        self._fitted_at: dict[str, int] = {}  # platform → positives at its last fit
        self._fits: dict[str, _Fit] = {}
        self.fits = 0

    def _added(self, i: int) -> None:
        if i == len(self._people_with):  # grow by doubling
            self._people_with = np.concatenate([self._people_with, np.zeros(i, np.int64)])

    def learn_one(self, person: str, key: str, platform: str) -> None:
        """``person`` liked ``key`` on ``platform`` (once counts: a repeat changes nothing);
        refits the platform when its positives have grown enough."""
        i = self.id_of(key)
        items = self._people.setdefault(platform, {}).setdefault(person, [])
        if i in items:
            return
        items.append(i)
        self._people_with[i] += 1
        if len(items) > self.per_person:
            # forgotten by the person, not by the count: it still says how popular it was
            del items[0]
        n = self._positives[platform] = self._positives.get(platform, 0) + 1
        last = self._fitted_at.get(platform)
        due = n >= self.first_fit if last is None else n >= last * (1.0 + self.refit_growth)
        if due:
            self._fit(platform)
            self._fitted_at[platform] = n

    def items_of(self, person: str, platform: str) -> list[str]:
        """The person's remembered items on ``platform``, oldest first."""
        return [self._keys[i] for i in self._people.get(platform, {}).get(person, [])]

    def fitted_items(self, platform: str) -> int:
        fit = self._fits.get(platform)
        return 0 if fit is None else len(fit.items)

    def _fit(self, platform: str) -> None:
        people = self._people[platform]
        ids = np.unique(np.fromiter((i for items in people.values() for i in items), np.int64))
        counts = self._people_with[ids]
        ids, counts = ids[counts >= self.min_count], counts[counts >= self.min_count]
        if len(ids) < 2:
            return
        if len(ids) > self.max_items:  # the most popular, ties by id (stable)
            ids = np.sort(ids[np.argsort(-counts, kind="stable")[: self.max_items]])
        column = np.full(len(self._keys), -1, np.int64)
        column[ids] = np.arange(len(ids))
        rows, cols = [], []
        for r, items in enumerate(people.values()):
            c = column[items]
            c = c[c >= 0]
            rows.append(np.full(len(c), r, np.int64))
            cols.append(c)
        r_, c_ = np.concatenate(rows), np.concatenate(cols)
        x = sp.csr_matrix((np.ones(len(r_), np.float32), (r_, c_)), shape=(len(people), len(ids)))
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        column_of = {i: c for c, i in enumerate(ids.tolist())}
        self._fits[platform] = _Fit(ids, column_of, _weights(gram))
        self.fits += 1

    def candidate_ids_many(
        self, histories: Sequence[Sequence[str]], platform: str, n: int
    ) -> list[Neighbours]:
        """For each history (item keys of ``platform``), the top ``n`` other fitted items of
        ``platform`` by the summed rows of its fitted items, positive scores only."""
        fit = self._fits.get(platform)
        if fit is None or n <= 0 or not histories:
            return [_EMPTY] * len(histories)
        ids, column = self._ids, fit.column
        m = min(n, len(fit.items))
        found: list[Neighbours] = []
        for history in histories:
            cols = [column[i] for i in (ids.get(k, -1) for k in history) if i in column]
            if not cols:
                found.append(_EMPTY)
                continue
            # per history: a batch's sparse x dense product measured ~3x slower on short
            # histories and no faster on 200 items (both read every row they sum)
            scores = fit.weights[cols].sum(axis=0)
            scores[cols] = 0.0  # never their own
            top = np.argpartition(-scores, m - 1)[:m]
            top = top[np.lexsort((top, -scores[top]))]  # best first, ties by column
            top = top[scores[top] > 0.0]
            if not len(top):
                found.append(_EMPTY)
                continue
            best = float(scores[top[0]])
            found.append(Neighbours(fit.items[top], scores[top].astype(np.float64) / best, best))
        return found


def _weights(gram: np.ndarray) -> np.ndarray:
    """EASE's ``B`` from ``XᵀX + λI`` (float32, symmetric positive definite), by a Cholesky
    factor and its inverse: half the work of a general inverse."""
    factor, info = lapack.spotrf(gram, lower=1, overwrite_a=1)
    if info == 0:
        inverse, info = lapack.spotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise ModelFitError(f"EASE: the Gram matrix is not positive definite (LAPACK info {info})")
    lower = np.tril(inverse)
    inverse = lower + np.tril(lower, -1).T
    weights: np.ndarray = inverse / -np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32, copy=False)
