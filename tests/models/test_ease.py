"""EASE per platform: the closed form, what a fit keeps, when it refits, what it proposes."""

from __future__ import annotations

import numpy as np
import pytest

from models.ease import Ease
from models.errors import ConfigError


def learn(ease: Ease, baskets: dict[str, list[str]], platform: str = "shop") -> None:
    for person, items in baskets.items():
        for item in items:
            ease.learn_one(person, f"{platform}:{item}", platform)


def scores_of(ease: Ease, history: list[str], platform: str = "shop") -> dict[str, float]:
    found = ease.candidate_ids_many([history], platform, n=100)[0]
    return {ease.keys[i]: float(s) for i, s in zip(found.ids, found.scores, strict=True)}


def test_scores_are_the_closed_form_rows_summed() -> None:
    """B = I - P diag(1/diag P), P = (XᵀX + λI)⁻¹, diagonal 0: checked against numpy's
    general inverse in float64 on a random basket matrix."""
    rng = np.random.default_rng(0)
    x = (rng.random((40, 12)) < 0.3).astype(np.float64)
    ease = Ease(l2=2.0, min_count=1, first_fit=int(x.sum()))
    for person, row in enumerate(x):
        for item in np.flatnonzero(row):
            ease.learn_one(f"p{person}", f"shop:{item:02d}", "shop")
    assert ease.fits == 1
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(12))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    history = [0, 5]
    expected = b[history].sum(axis=0)
    expected[history] = 0.0
    found = ease.candidate_ids_many([[f"shop:{i:02d}" for i in history]], "shop", n=12)[0]
    got = {ease.keys[i]: s * found.strength for i, s in zip(found.ids, found.scores, strict=True)}
    positive = {f"shop:{j:02d}": v for j, v in enumerate(expected) if v > 0}
    assert got.keys() == positive.keys()
    for key, value in positive.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6)
    assert found.scores[0] == 1.0 and found.strength == pytest.approx(max(positive.values()))


def test_a_platform_is_refitted_as_its_positives_grow_and_repeats_do_not_count() -> None:
    ease = Ease(min_count=1, first_fit=4, refit_growth=0.5)
    learn(ease, {"ann": ["a", "b", "a", "b"], "bob": ["a"]})  # 3 positives: no fit yet
    assert ease.fits == 0 and scores_of(ease, ["shop:a"]) == {}
    learn(ease, {"bob": ["b"]})  # the 4th
    assert ease.fits == 1 and ease.fitted_items("shop") == 2
    learn(ease, {"cy": ["a"]})  # 5 < 4 x 1.5
    assert ease.fits == 1
    learn(ease, {"cy": ["c"]})  # 6
    assert ease.fits == 2 and ease.fitted_items("shop") == 3


def test_a_fit_keeps_the_most_popular_items_with_enough_people() -> None:
    baskets = {"p1": ["a", "b", "c"], "p2": ["a", "b", "c"], "p3": ["a", "b"], "p4": ["d"]}
    ease = Ease(min_count=2, max_items=2, first_fit=sum(map(len, baskets.values())))
    learn(ease, baskets)
    assert ease.fitted_items("shop") == 2  # a and b (3 people); c has 2, d 1
    assert scores_of(ease, ["shop:a"]) == {"shop:b": 1.0}
    assert scores_of(ease, ["shop:c"]) == {}  # not fitted: nothing to go on
    assert scores_of(ease, ["shop:a", "shop:b"]) == {}  # a history's own items are not proposed


def test_platforms_are_fitted_and_queried_apart() -> None:
    ease = Ease(min_count=1, first_fit=2)
    learn(ease, {"ann": ["a", "b"], "bob": ["a", "b"]}, "shop")
    learn(ease, {"ann": ["x", "y"], "bob": ["x", "y"]}, "video")
    assert scores_of(ease, ["shop:a"]) == {"shop:b": 1.0}
    assert scores_of(ease, ["video:x"], "video") == {"video:y": 1.0}
    assert scores_of(ease, ["shop:a"], "video") == {}
    assert ease.items_of("ann", "video") == ["video:x", "video:y"]
    assert ease.items_of("ann", "news") == []


def test_a_person_keeps_their_latest_items() -> None:
    ease = Ease(per_person=2)
    learn(ease, {"ann": ["a", "b", "c"]})
    assert ease.items_of("ann", "shop") == ["shop:b", "shop:c"]


@pytest.mark.parametrize(("setting", "value"), [("l2", 0.0), ("refit_growth", 0.0)])
def test_settings_that_cannot_work_are_refused(setting: str, value: float) -> None:
    with pytest.raises(ConfigError, match=setting):
        Ease(**{setting: value})  # type: ignore[arg-type]
