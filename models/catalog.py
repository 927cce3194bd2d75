"""In-memory item index: embeddings in one contiguous matrix, for brute-force neighbour search.

The catalog agent upserts items as they arrive; every scoring call reads the matrix. With
384-d float32 vectors, 100k items take 150 MB and one batched matmul scores them all. The
search (the product and the top ``n`` of each row) runs as a two-node ONNX graph in ONNX
Runtime, like the other models of the serving path: on this 2-core machine ~3x faster than
numpy's product plus ``argpartition`` (9,742 items, 80 queries: 3.0 vs 9.3 ms), and it can
run on a GPU with the same graph. Each platform keeps its own search matrix, a second copy of
its vectors written in place as items join or change (``_PlatformIndex``), so a catalog that
changes while events are ranked pays one row per change (``python -m loadtest.bench_search``).

Examples
--------
>>> import numpy as np
>>> c = Catalog(dim=2)
>>> c.upsert("shop:a", "shop", np.array([1.0, 0.0]), available=True, added_ts=0.0)
>>> c.upsert("shop:b", "shop", np.array([0.0, 1.0]), available=True, added_ts=5.0)
>>> c.upsert("video:c", "video", np.array([0.7, 0.7]), available=True, added_ts=1.0)
>>> rows, sims = c.neighbours(np.array([[0.9, 0.1]], dtype=np.float32), "shop", n=1)
>>> [c.keys[r] for r in rows[0]]
['shop:a']
>>> [c.keys[r] for r in c.newest("shop", 1)]
['shop:b']
"""

from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from models.artifacts import session_options
from models.errors import InvalidEventError


@functools.cache
def _search_session(threads: int, spinning: bool = True) -> ort.InferenceSession:
    """``(queries [q, d], matrix [n, d], k [1])`` → the ``k`` largest of ``queries @ matrix.T``
    per row, best first (ties: the lower index first), and their indices, on ``threads``
    intra-op threads (0: one per core), busy-waiting between calls if ``spinning``
    (:func:`models.artifacts.session_options`). One per process and setting, shared by every
    catalog (a session is thread-safe, and a catalog stays copyable)."""
    floats = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["queries", "matrix"], ["sims"], transB=1),
            helper.make_node("TopK", ["sims", "k"], ["values", "indices"], axis=1),
        ],
        "catalog_search",
        [
            helper.make_tensor_value_info("queries", floats, ["queries", "dim"]),
            helper.make_tensor_value_info("matrix", floats, ["items", "dim"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("values", floats, ["queries", "k"]),
            helper.make_tensor_value_info("indices", TensorProto.INT64, ["queries", "k"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(
        model.SerializeToString(),
        session_options(threads, spinning),
        providers=["CPUExecutionProvider"],
    )


def search(
    queries: np.ndarray, matrix: np.ndarray, n: int, threads: int = 0, spinning: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the top ``min(n, len(matrix))`` rows of ``matrix`` by dot product with
    each query, best first, and their products (``threads``, ``spinning``: see
    :func:`_search_session`)."""
    sims, top = _search_session(threads, spinning).run(
        None,
        {
            "queries": np.ascontiguousarray(queries, dtype=np.float32),
            "matrix": np.ascontiguousarray(matrix, dtype=np.float32),
            "k": np.array([min(n, len(matrix))], np.int64),
        },
    )
    return top, sims


def masked_search(
    queries: np.ndarray, matrix: np.ndarray, n: int, threads: int = 0, spinning: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search` over a matrix whose last column is :func:`availability` (0 or -inf): the
    queries get a 1 there, so an unavailable row scores -inf and is never among the top ``n``
    when ``n`` is at most the available count."""
    padded = np.ones((len(queries), matrix.shape[1]), dtype=np.float32)
    padded[:, :-1] = queries
    return search(padded, matrix, n, threads, spinning)


def availability(available: np.ndarray | bool) -> np.ndarray:
    """The last column of a :func:`masked_search` matrix: 0 where available, else -inf."""
    return np.where(available, np.float32(0.0), np.float32(-np.inf))


class PlatformKeys:
    """A read-only view: the keys of some catalog rows, in row order."""

    def __init__(self, keys: list[str], rows: np.ndarray) -> None:
        self._keys = keys
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int, /) -> str:
        return self._keys[self._rows[i]]


class _PlatformIndex:
    """One platform's rows and a search matrix of their vectors, grown in place.

    The matrix has one column more than the vectors, :func:`availability` (see
    :func:`masked_search`): a new, changed or withdrawn item costs one row written, not a copy
    of the platform's matrix (150 MB at 100k items)."""

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.unavailable = 0
        self.version = 0  # bumps when rows join or change availability or age
        self.rows = np.zeros(64, dtype=np.int64)
        self.matrix = np.zeros((64, dim + 1), dtype=np.float32)
        # version → (available rows, the rows newest first): cheap next to the matrix, but
        # not redone for every query.
        self.derived: tuple[int, np.ndarray, np.ndarray] | None = None

    def append(self, row: int) -> int:
        if self.count == len(self.rows):
            self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
            self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
        self.rows[self.count] = row
        self.count += 1
        return self.count - 1

    def write(self, position: int, vector: np.ndarray, available: bool) -> None:
        self.matrix[position, :-1] = vector
        self.matrix[position, -1] = availability(available)


class Catalog:
    """``search_threads``: ONNX Runtime's intra-op threads for :meth:`neighbours` (0: one per
    core; each process of a ``--jobs N`` replay takes 1, see ``models.evaluation``);
    ``search_spinning``: whether they busy-wait between searches (off in the stream worker, see
    :func:`models.artifacts.session_options`)."""

    def __init__(
        self, dim: int = 384, search_threads: int = 0, search_spinning: bool = True
    ) -> None:
        self.dim = dim
        self.search_threads = search_threads
        self.search_spinning = search_spinning
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.platforms: list[str] = []
        self._vectors = np.zeros((1024, dim), dtype=np.float32)
        self._available = np.zeros(1024, dtype=bool)
        self._added = np.zeros(1024, dtype=np.float64)
        self._written = np.zeros(1024, dtype=np.int64)  # version at which the vector was set
        self._position = np.zeros(1024, dtype=np.int64)  # the row's place in its platform
        self._key_objects = np.zeros(1024, dtype=object)
        self._by_platform: dict[str, _PlatformIndex] = {}
        self.version = 0  # bumps on every change; lets callers cache derived data

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def upsert(
        self, key: str, platform: str, vector: np.ndarray, *, available: bool, added_ts: float
    ) -> None:
        if vector.shape != (self.dim,):
            raise InvalidEventError(f"item {key}: vector shape {vector.shape} != ({self.dim},)")
        if not np.isfinite(vector).all():
            # a NaN row would top every search and make each viewer's interest NaN for good
            raise InvalidEventError(f"item {key}: vector is not finite")
        row = self.index.get(key)
        new = row is None
        if row is None:
            row = len(self.keys)
            if row == len(self._vectors):
                self._grow()
            self.keys.append(key)
            self.platforms.append(platform)
            self.index[key] = row
            self._key_objects[row] = key
            index = self._by_platform.setdefault(platform, _PlatformIndex(self.dim))
            self._position[row] = index.append(row)
            index.unavailable += not available
            index.version += 1
        else:
            index = self._by_platform[self.platforms[row]]
            if self._available[row] != available or self._added[row] != added_ts:
                index.unavailable += int(self._available[row]) - int(available)
                index.version += 1
        self.version += 1
        if new or not np.array_equal(self._vectors[row], vector):
            self._written[row] = self.version
        self._vectors[row] = vector
        self._available[row] = available
        self._added[row] = added_ts
        index.write(int(self._position[row]), self._vectors[row], available)

    def _grow(self) -> None:
        n = 2 * len(self._vectors)
        for name in ("_vectors", "_available", "_added", "_written", "_position", "_key_objects"):
            old = getattr(self, name)
            new = np.zeros((n, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    @property
    def key_array(self) -> np.ndarray:
        """``keys`` as a numpy object array: ``key_array[rows].tolist()`` gathers many keys
        several times faster than a list comprehension."""
        return self._key_objects[: len(self.keys)]

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: len(self.keys)]

    @property
    def written(self) -> np.ndarray:
        """Per row, the :attr:`version` at which its vector was last set: data derived from a
        row's vector (the ranking head's item tower) is stale when this moved on."""
        return self._written[: len(self.keys)]

    @property
    def available(self) -> np.ndarray:
        return self._available[: len(self.keys)]

    @property
    def added_ts(self) -> np.ndarray:
        return self._added[: len(self.keys)]

    def rows(self, platform: str) -> np.ndarray:
        """``platform``'s rows, in the order they joined (a view: do not write to it)."""
        index = self._by_platform.get(platform)
        return np.zeros(0, np.int64) if index is None else index.rows[: index.count]

    def platform_keys(self, platform: str) -> PlatformKeys:
        """The keys of ``platform``'s items, looked up when indexed (nothing copied)."""
        return PlatformKeys(self.keys, self.rows(platform))

    def vector(self, key: str) -> np.ndarray:
        return self._vectors[self.index[key]]

    def neighbours(
        self, queries: np.ndarray, platform: str, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` available items of ``platform`` by dot product, for each query row."""
        searchable = self.available_count(platform)
        if searchable == 0 or len(queries) == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.int64), empty.astype(np.float32)
        index = self._by_platform[platform]
        top, sims = self.masked_search(queries, index.matrix[: index.count], min(n, searchable))
        return index.rows[top], sims

    def masked_search(
        self, queries: np.ndarray, matrix: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`masked_search` on this catalog's search threads and spinning, for its own
        platform matrices and those laid out like them (another model's vectors of a platform's
        :meth:`rows`, the last column :func:`availability`)."""
        return masked_search(queries, matrix, n, self.search_threads, self.search_spinning)

    def available_count(self, platform: str) -> int:
        """How many of ``platform``'s items are available (kept as they change)."""
        index = self._by_platform.get(platform)
        return 0 if index is None else index.count - index.unavailable

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Each row's place in its platform's :meth:`rows`."""
        return self._position[rows]

    def platform_version(self, platform: str) -> int:
        """Moves on whenever an item of ``platform`` joins or changes availability or age."""
        index = self._by_platform.get(platform)
        return -1 if index is None else index.version

    def newest(self, platform: str, n: int) -> np.ndarray:
        return self._derived(platform)[1][:n]

    def searchable(self, platform: str) -> np.ndarray:
        """The available rows of ``platform``."""
        return self._derived(platform)[0]

    def _derived(self, platform: str) -> tuple[np.ndarray, np.ndarray]:
        """The available rows of ``platform`` and those rows newest first, kept until one of
        its items joins or changes availability or age."""
        index = self._by_platform.get(platform)
        if index is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if index.derived is None or index.derived[0] != index.version:
            rows = index.rows[: index.count]
            rows = rows[self._available[rows]]
            by_age = rows[np.argsort(-self._added[rows], kind="stable")]
            index.derived = (index.version, rows, by_age)
        return index.derived[1], index.derived[2]
