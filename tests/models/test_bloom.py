"""The consumed items' Bloom filter: never a wrong "no", rarely a wrong "yes"."""

from __future__ import annotations

import pytest

from models.bloom import BITS, BloomFilter


def _filled(keys: list[str]) -> BloomFilter:
    f = BloomFilter()
    for k in keys:
        f = f.with_key(k)
    return f


def test_holds_every_key_added_and_few_others() -> None:
    added = [f"movielens:{i}" for i in range(2_000)]
    f = _filled(added)
    assert all(k in f for k in added)
    # (1 - e^(-6 * 2000 / 2^15))^6 = 0.0013: 26 of 20,000 expected
    wrong = sum(f"movielens:other-{i}" in f for i in range(20_000))
    assert wrong < 80, wrong
    assert len(f) <= 2_000 and len(f) > 1_990  # a key it seemed to hold is not counted


def test_adding_leaves_the_original_as_it_was() -> None:
    empty = BloomFilter()
    one = empty.with_key("a")
    assert "a" in one and "a" not in empty and len(empty) == 0
    assert one.with_key("a") is one


def test_union_holds_both() -> None:
    a, b = _filled(["x", "y"]), _filled(["z"])
    both = a.union(b)
    assert all(k in both for k in "xyz") and len(both) == 3 and "z" not in a


def test_round_trip_and_refusals() -> None:
    f = _filled(["a", "b"])
    assert BloomFilter.from_dict(f.to_dict()) == f
    with pytest.raises(ValueError, match="bytes"):
        BloomFilter(bytes(BITS // 8 - 1))
    with pytest.raises(TypeError, match="natural number"):
        BloomFilter.from_dict({**f.to_dict(), "count": True})
    with pytest.raises(ValueError):
        BloomFilter.from_dict({**f.to_dict(), "bits": "not base64!"})
