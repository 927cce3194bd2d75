"""Global, online signals learned from the whole stream: popularity and co-visitation.

Both decay with event time so the system follows trends, and both are bounded in memory.

Examples
--------
>>> pop = Popularity(half_life_s=3600.0)
>>> for key in ["shop:a", "shop:a", "shop:b"]:
...     pop.learn_one(key, "shop", ts=0.0)
>>> pop.top("shop", 1, ts=0.0)
['shop:a']
>>> round(pop.predict_one("shop:a", ts=3600.0) / pop.predict_one("shop:a", ts=0.0), 3)
0.5
>>> cv = CoVisitation(window=3)
>>> cv.learn_one(["shop:a", "video:x"])
>>> cv.candidates(["shop:a"], platform="video", n=5)
{'video:x': 1.0}
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict


class Popularity:
    """Exponentially decayed interaction counts per item, ranked per platform.

    Counts are stored scaled by ``2**(ts/half_life)`` so a new event never has to touch the
    others; ranking compares scaled values, and :meth:`predict_one` rescales to now.
    """

    def __init__(self, half_life_s: float = 7 * 24 * 3600.0) -> None:
        self.half_life_s = half_life_s
        self._scaled: dict[str, float] = {}
        self._platform_of: dict[str, str] = {}
        self._origin: float | None = None
        self._top_cache: dict[str, list[str]] = {}
        self._max_scaled: dict[str, float] = defaultdict(float)

    def _scale(self, ts: float) -> float:
        if self._origin is None:
            self._origin = ts
        return 2.0 ** ((ts - self._origin) / self.half_life_s)

    def learn_one(self, key: str, platform: str, ts: float, weight: float = 1.0) -> None:
        value = self._scaled.get(key, 0.0) + weight * self._scale(ts)
        self._scaled[key] = value
        self._platform_of[key] = platform
        if value > self._max_scaled[platform]:
            self._max_scaled[platform] = value
        self._top_cache.pop(platform, None)
        if self._scale(ts) > 1e12:  # keep the floats finite on long streams
            self._rebase(ts)

    def _rebase(self, ts: float) -> None:
        factor = self._scale(ts)
        self._scaled = {k: v / factor for k, v in self._scaled.items()}
        self._max_scaled = defaultdict(float, {p: v / factor for p, v in self._max_scaled.items()})
        self._origin = ts

    def predict_one(self, key: str, ts: float) -> float:
        """Decayed count at ``ts``."""
        return self._scaled.get(key, 0.0) / self._scale(ts)

    def normalised(self, key: str, platform: str) -> float:
        """log-popularity relative to the platform's most popular item, in [0, 1]."""
        top = self._max_scaled.get(platform, 0.0)
        value = self._scaled.get(key, 0.0)
        if top <= 0.0 or value <= 0.0:
            return 0.0
        return math.log1p(value / top * 1000.0) / math.log1p(1000.0)

    def top(self, platform: str, n: int, ts: float) -> list[str]:
        cached = self._top_cache.get(platform)
        if cached is None or len(cached) < n:
            keys = (k for k, p in self._platform_of.items() if p == platform)
            cached = heapq.nlargest(max(n, 100), keys, key=self._scaled.__getitem__)
            self._top_cache[platform] = cached
        return cached[:n]


class CoVisitation:
    """Items engaged with close together in one person's history, across platforms.

    ``learn_one(history)`` pairs the newest item with the previous ``window`` ones, weighted by
    1/distance; neighbour lists are pruned to ``max_neighbours`` to bound memory.
    """

    def __init__(self, window: int = 5, max_neighbours: int = 200) -> None:
        self.window = window
        self.max_neighbours = max_neighbours
        self._pairs: dict[str, dict[str, float]] = defaultdict(dict)

    def learn_one(self, history: list[str]) -> None:
        """``history`` is one person's recent items, newest last."""
        if len(history) < 2:
            return
        newest = history[-1]
        for distance, other in enumerate(reversed(history[-self.window - 1 : -1]), start=1):
            if other == newest:
                continue
            w = 1.0 / distance
            self._add(newest, other, w)
            self._add(other, newest, w)

    def _add(self, a: str, b: str, w: float) -> None:
        row = self._pairs[a]
        row[b] = row.get(b, 0.0) + w
        if len(row) > 2 * self.max_neighbours:
            keep = heapq.nlargest(self.max_neighbours, row.items(), key=lambda kv: kv[1])
            self._pairs[a] = dict(keep)

    def candidates(self, recent: list[str], platform: str, n: int) -> dict[str, float]:
        """Items of ``platform`` co-visited with ``recent`` (newest last), scores in [0, 1]."""
        scores: dict[str, float] = defaultdict(float)
        prefix = platform + ":"
        for age, key in enumerate(reversed(recent[-self.window :])):
            row = self._pairs.get(key)
            if not row:
                continue
            total = sum(row.values())
            for other, w in row.items():
                if other.startswith(prefix):
                    scores[other] += (w / total) / (1 + age)
        if not scores:
            return {}
        top = heapq.nlargest(n, scores.items(), key=lambda kv: kv[1])
        best = top[0][1]
        return {k: v / best for k, v in top}

    def __len__(self) -> int:
        return len(self._pairs)
