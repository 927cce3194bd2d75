"""A small, immutable Bloom filter of strings: exact "no", almost always right "yes".

A person's session keeps the last :data:`models.session.MAX_CONSUMED` consumed items as a
list (the co-visitation signals need their order); the ones that fall out of it go into one
of these, so what a heavy user consumed years ago is still never recommended to them again,
in a fixed 4 KiB however long their history.

With 2^15 bits and 6 hashes, the chance that an item never added is reported as added is
about 1 in 10,000 with 1,000 items in the filter, 1 in 1,000 with 2,000 and 1 in 20 with
5,000 (``(1 - e^(-6n/2^15))^6``); such an item is only left out of that person's lists.

Examples
--------
>>> seen = BloomFilter().with_key("shop:boots").with_key("video:jazz-1")
>>> "shop:boots" in seen, "shop:hat" in seen, len(seen)
(True, False, 2)
>>> BloomFilter.from_dict(seen.to_dict()) == seen
True
"""

from __future__ import annotations

import base64
import hashlib
import struct
from functools import lru_cache
from typing import Any

BITS = 1 << 15
HASHES = 6
_POSITIONS = struct.Struct(f"<{HASHES}H")


@lru_cache(maxsize=1 << 16)
def _positions(key: str) -> tuple[int, ...]:
    """The key's bit positions: 16-bit slices of one BLAKE2b digest, top bit dropped (BITS is
    2^15). Cached: a catalog's keys are asked about again and again."""
    digest = hashlib.blake2b(key.encode(), digest_size=2 * HASHES).digest()
    return tuple(p & (BITS - 1) for p in _POSITIONS.unpack(digest))


class BloomFilter:
    """A set of strings that may wrongly answer "in", never wrongly "not in"; ``len`` counts
    the keys added (one it seemed to hold already is not counted again)."""

    __slots__ = ("_bits", "_count")

    def __init__(self, bits: bytes | None = None, count: int = 0) -> None:
        if bits is not None and len(bits) != BITS // 8:
            raise ValueError(f"a Bloom filter has {BITS // 8} bytes, got {len(bits)}")
        self._bits = bits if bits is not None else bytes(BITS // 8)
        self._count = count

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        bits = self._bits
        return all(bits[p >> 3] >> (p & 7) & 1 for p in _positions(key))

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BloomFilter)
            and self._bits == other._bits
            and self._count == other._count
        )

    def __hash__(self) -> int:
        return hash((self._bits, self._count))

    def __repr__(self) -> str:
        return f"BloomFilter({self._count} keys)"

    def with_key(self, key: str) -> BloomFilter:
        """A filter holding ``key`` as well (this one is left as it was: sessions share it)."""
        if key in self:
            return self
        bits = bytearray(self._bits)
        for p in _positions(key):
            bits[p >> 3] |= 1 << (p & 7)
        return BloomFilter(bytes(bits), self._count + 1)

    def union(self, other: BloomFilter) -> BloomFilter:
        """Every key of both (``len`` adds up: keys in both count twice)."""
        merged = int.from_bytes(self._bits, "little") | int.from_bytes(other._bits, "little")
        return BloomFilter(merged.to_bytes(BITS // 8, "little"), self._count + other._count)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self._count, "bits": base64.b64encode(self._bits).decode()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BloomFilter:
        """The filter :meth:`to_dict` wrote; ValueError/TypeError/KeyError if it is not one."""
        count = d["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise TypeError(f"a Bloom filter's count is a natural number, got {count!r:.40}")
        bits = d["bits"]
        if not isinstance(bits, str):
            raise TypeError(f"a Bloom filter's bits are base64 text, got {type(bits).__name__}")
        return cls(base64.b64decode(bits, validate=True), count)
