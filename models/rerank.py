"""A second stage over the blend: gradient-boosted trees, retrained on the lists people answered.

The adaptive blend is linear in the signals and learns online, pair by pair. On the MovieLens
replay's logged signals, trees fitted offline ranked ~3 % better than the best linear model of
the same signals, and only through interactions between them (trees restricted to one signal
each did worse than linear). Online learners of interactions (a small MLP, pairwise products in
the blend) did worse than the blend itself (noisy pairs, too few of them), but trees refitted
on batches of logged lists keep the gain; Metarank trains its LambdaMART the same way, on the
feature values it logged at ranking time.

So every list the pipeline shows is kept with its feature matrix, in the blend's order; when the
person then engages with one of its candidates, :meth:`Reranker.learn_one` stores that row as a
positive and ``negatives`` other candidates drawn uniformly as negatives. Every
``retrain_every`` such lists it fits a :class:`~sklearn.ensemble.HistGradientBoostingClassifier`
on the latest ``max_lists`` of them (one model for all platforms: its inputs mean the same on
each); until the first fit, the blend's order is served unchanged. The blend's position of a
candidate (``1 / (1 + rank)``) is one more input, so the trees correct the blend rather than
replace it. So are a few values of the request itself, the same on every row of a list (the
pipeline's: how much history the person has here and elsewhere, and how strongly each
neighbour signal points anywhere for them): a linear blend weighs a signal alike for everyone,
the trees can trust co-visitation more for a person with a long history than for a newcomer.

Each fit is turned into one ONNX ``TreeEnsembleRegressor`` (:func:`trees_to_onnx`) and served
by ONNX Runtime, like the other models on the serving path: 2 ms for a batch of 32 lists of 50
where sklearn's own predictor took 22 ms. Every conversion is checked against sklearn's margins
(atol :data:`ONNX_ATOL`) before it is served.

Everything it learns from happened before it ranks anything: the fit only sees lists already
answered, so a prequential replay stays honest.

Examples
--------
Two signals that only matter together (the positive is the one candidate high in both):

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> def shown():
...     f = rng.random((30, 2)).astype(np.float32)
...     f[0] = (0.9, 0.9)           # the one people pick
...     f[1:10, 0] = 0.95           # high in one signal only
...     f[10:20, 1] = 0.95
...     order = rng.permutation(30)
...     return f[order], int(np.flatnonzero(order == 0)[0])
>>> rr = Reranker(retrain_every=200, negatives=10)
>>> rr.ready
False
>>> for _ in range(200):
...     rr.learn_one(*shown())
>>> rr.ready
True
>>> f, positive = shown()
>>> int(np.argmax(rr.score(f))) == positive
True
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import logging
import multiprocessing
import os
import re
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.shared_memory import SharedMemory
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_info, threadpool_limits

from models.errors import (
    ConfigError,
    ExportValidationError,
    ModelFitError,
    ModelNotReadyError,
)

log = logging.getLogger(__name__)

#: The ONNX trees must give sklearn's margins to this (float32 sums of ~200 leaf values).
ONNX_ATOL = 1e-4
#: A fit's lists handed over through a file (no room in ``/dev/shm``):
#: ``<temp dir>/streamrec-reranker-<writer's process id>-<random>.rows``
HAND_OVER_PREFIX = "streamrec-reranker-"
_HAND_OVER_NAME = re.compile(re.escape(HAND_OVER_PREFIX) + r"(\d+)-\w+\.rows")
#: Seconds after which a hand-over file whose writer is gone counts as left behind (a fit
#: reads its file within seconds of its writing).
ORPHAN_AGE_S = 600.0


class Reranker:
    """Gradient-boosted trees over a ranking's signals, fitted every ``retrain_every`` answered
    lists on the latest ``max_lists``; ``background=True`` fits in another process while the
    caller goes on, ``False`` fits inline. A background fit's trees serve once they are ready
    (the stream worker), or with ``serve_after`` exactly that many answered lists after the fit
    started, waiting for it if need be: the same trees at the same point whatever the machine's
    speed, so a replay stays reproducible while its fits run beside it."""

    def __init__(
        self,
        retrain_every: int = 4000,
        negatives: int = 10,
        max_lists: int = 30_000,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 100,
        seed: int = 7,
        background: bool = False,
        serve_after: int | None = None,
    ) -> None:
        if retrain_every < 1 or negatives < 1:
            raise ValueError("retrain_every and negatives must be >= 1")
        if serve_after is not None and not 0 <= serve_after < retrain_every:
            # a later fit must never start while the last one's trees are still due
            raise ValueError("serve_after must be in [0, retrain_every)")
        if background and getattr(multiprocessing.current_process(), "_inheriting", False):
            # Spawning the fitting process imports the main module again: an unguarded script
            # would run in it up to its first fit, fail to start one there, log that, go on.
            raise ConfigError(
                "a reranker fitting in the background was made while this process was starting"
                " (the fitting process, importing the main module again): guard the script's"
                ' entry point with `if __name__ == "__main__":`'
            )
        self.retrain_every = retrain_every
        self.negatives = negatives
        self.max_lists = max_lists
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed
        self.background = background
        self.serve_after = serve_after
        self._rng = np.random.default_rng(seed)
        # The latest ``max_lists`` answered lists, a ring: slot ``i % max_lists`` holds the
        # ``i``-th list's rows (the positive first) and how many there are. One array, not one
        # per list: a fit takes them out with one ``np.take`` (~13 ms for 30,000, the GIL
        # released) straight into the block handed to the fitting process.
        self._rows: np.ndarray | None = None  # (max_lists, negatives + 1, inputs)
        self._lengths = np.zeros(max_lists, np.int64)
        self._since_fit = 0
        self._model: ort.InferenceSession | None = None
        self._fits = 0
        self.answered = 0  # lists learned from
        self.fitted_at: list[int] = []  # ``answered`` when each fit started
        self.fit_seconds = 0.0  # spent fitting, in total
        self.waited_seconds = 0.0  # the caller blocked on fits due (``serve_after``, wait())
        self.failed_fits = 0  # background fits that raised (logged; the old trees served on)
        self._pending: Future[FittedTrees] | None = None
        # where a background fit's lists are handed to the fitting process: made at the first,
        # reused (a new block per fit page-faulted for longer than pickling took)
        self._handover: SharedMemory | None = None
        # A background fit's lists are copied out of the ring by a thread (:meth:`_fit`) while
        # the caller goes on: until ``_copied`` is set, lists answered meanwhile wait in
        # ``_deferred`` (their index and rows), so the fit sees exactly the lists before it.
        self._copied: threading.Event | None = None
        self._deferred: list[tuple[int, np.ndarray]] = []
        self.last_fit: FittedTrees | None = None  # the trees served, and how they were fitted

    def __deepcopy__(self, memo: dict[int, Any]) -> Reranker:
        """A reranker that goes on learning and scoring on its own (a replay's what-if; its
        trees rebuilt from their ONNX bytes). A fit still running is shared: its result is
        the same trees for both, served by each at its own time; its lists' hand-over block
        is not (the copy makes its own at its next fit)."""
        clone = Reranker.__new__(Reranker)
        memo[id(self)] = clone
        shared = {"_pending", "_copied"}
        for name, value in vars(self).items():
            if name in shared:
                setattr(clone, name, value)
            elif name in ("_model", "_handover"):
                setattr(clone, name, None)
            else:
                setattr(clone, name, copy.deepcopy(value, memo))
        if self._model is not None and self.last_fit is not None:
            clone._model = _session(self.last_fit.onnx)
        return clone

    @property
    def ready(self) -> bool:
        """Has a fit finished (is :meth:`score` answering)?"""
        self._poll()
        return self._model is not None

    @property
    def fits(self) -> int:
        return self._fits

    @staticmethod
    def inputs(
        features: np.ndarray, rows: np.ndarray | None = None, request: np.ndarray | None = None
    ) -> np.ndarray:
        """The trees' inputs for a list in the blend's order: its signals, ``1/(1+rank)``, and
        the values of ``request`` (what describes the whole list: the same on every row); only
        those of ``rows`` if given."""
        if rows is None:
            rows = np.arange(len(features))
        else:
            features = features[rows]
        position = 1.0 / (1.0 + rows.astype(np.float32))
        columns = [features, position[:, None]]
        if request is not None:
            columns.append(np.broadcast_to(request.astype(np.float32), (len(rows), len(request))))
        return np.concatenate(columns, axis=1)

    def learn_one(
        self, features: np.ndarray, positive: int, request: np.ndarray | None = None
    ) -> None:
        """The person engaged with candidate ``positive`` of a list shown in the blend's order
        (``features``: one row per candidate, as the pipeline logged them; ``request``: the
        list's own values, :meth:`inputs`)."""
        n = len(features)
        if n < 2:
            return
        # the same draws as choosing among the other candidates themselves
        picked = self._rng.choice(n - 1, min(self.negatives, n - 1), replace=False)
        picked += picked >= positive
        self._store(self.inputs(features, np.concatenate([[positive], picked]), request))
        self.answered += 1
        self._since_fit += 1
        self._poll()
        if self._since_fit >= self.retrain_every:
            self._since_fit = 0
            self._fit()

    def score(self, features: np.ndarray, request: np.ndarray | None = None) -> np.ndarray:
        """How likely each candidate of a list (in the blend's order) is to be engaged with."""
        return self.score_many([features], None if request is None else [request])[0]

    def score_many(
        self, lists: Sequence[np.ndarray], requests: Sequence[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        """:meth:`score` for several lists (and their ``requests``) in one call of the trees."""
        model = self._model
        if model is None:
            raise ModelNotReadyError("the reranker has not been fitted yet (check .ready)")
        if not lists:
            return []
        per_list = requests if requests is not None else [None] * len(lists)
        x = np.concatenate(
            [self.inputs(f, None, r) for f, r in zip(lists, per_list, strict=True)]
        ).astype(np.float32, copy=False)
        margin = _margins(model, x)
        p = (1.0 / (1.0 + np.exp(-margin))).astype(np.float32)
        bounds = np.cumsum([len(f) for f in lists])[:-1]
        return list(np.split(p, bounds))

    def wait(self) -> None:
        """Block until a fit running in the background is done, and serve its trees (tests,
        shutdown). A failed fit raises here."""
        pending = self._pending
        if pending is not None:
            started = time.perf_counter()
            fitted = pending.result()
            self.waited_seconds += time.perf_counter() - started
            self._swap_in(fitted)

    def _poll(self) -> None:
        """Serve a background fit's trees once they are ready (or, with ``serve_after``, once
        they are due: then wait for them), from the caller's thread: the fitting process never
        touches the reranker's state, so it needs no lock. A failed fit is logged and counted,
        and the old trees keep serving; with ``serve_after`` it raises (a replay must not go on
        with other trees than the ones it reports)."""
        pending = self._pending
        if pending is None:
            return
        if self.serve_after is not None:
            if self.answered >= self.fitted_at[-1] + self.serve_after:
                self.wait()
            return
        if not pending.done():
            return
        error = pending.exception()
        if error is None:
            self._swap_in(pending.result())
            return
        self._pending = None
        self._write_deferred()
        self.failed_fits += 1
        log.error("reranker fit failed, the previous trees keep serving: %s", error)

    def _store(self, rows: np.ndarray) -> None:
        if self._rows is None:
            shape = (self.max_lists, self.negatives + 1, rows.shape[1])
            self._rows = np.zeros(shape, rows.dtype)
        elif rows.shape[1] != self._rows.shape[2]:
            raise ValueError(f"a list of {rows.shape[1]} inputs after {self._rows.shape[2]}")
        self._deferred.append((self.answered, rows))
        self._write_deferred()

    def _write_deferred(self) -> None:
        """Write the lists answered during a fit's copy into the ring, once no copy runs."""
        if self._copied is not None:
            if not self._copied.is_set():
                return
            self._copied = None
        ring = self._rows
        if ring is None:  # nothing stored yet, so nothing deferred
            return
        for index, rows in self._deferred:
            slot = index % self.max_lists
            ring[slot, : len(rows)] = rows
            self._lengths[slot] = len(rows)
        self._deferred.clear()

    def stored(self, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The lists kept for the next fit, oldest first: their rows (lists x the most rows
        one holds x inputs; a list's first ``length`` rows are its own, the positive first) and
        their lengths. Copies; the rows into ``out`` if given (shaped like them). Waits for a
        background fit's copy of the ring to end first: lists answered during it are written
        only then."""
        if self._copied is not None:
            self._copied.wait()
        self._write_deferred()
        return self._snapshot(self.answered, out)

    def _snapshot(
        self, answered: int, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`stored` as of the ``answered``-th list, from the ring as it is (no list after
        it written there yet)."""
        if self._rows is None:
            return np.zeros((0, self.negatives + 1, 0), np.float32), np.zeros(0, np.int64)
        order = self._ring_order(answered)
        return np.take(self._rows, order, axis=0, out=out), self._lengths[order]

    def _ring_order(self, answered: int) -> np.ndarray:
        """The ring's slots of the latest ``max_lists`` of the first ``answered`` lists,
        oldest first."""
        count = min(answered, self.max_lists)
        return (answered - count + np.arange(count)) % self.max_lists

    def fit_params(self) -> dict[str, Any]:
        """The trees' hyper-parameters (:func:`fit_trees`)."""
        return {
            "max_iter": self.max_iter,
            "learning_rate": self.learning_rate,
            "max_leaf_nodes": self.max_leaf_nodes,
            "min_samples_leaf": self.min_samples_leaf,
            "random_state": self.seed,
        }

    def _fit(self) -> None:
        self._poll()
        if self._pending is not None:
            return  # still fitting the previous batch: the next trigger takes the new lists
        self.fitted_at.append(self.answered)
        params = self.fit_params()
        # its own generator: checking a fit must not change the negatives drawn next
        check_seed = self.seed + len(self.fitted_at) - 1
        if not self.background:
            rows, lengths = self.stored()
            self._swap_in(fit_lists(rows, lengths, params, check_seed))
            return
        # Copying 30,000 lists (46 MB) out of the ring paused the caller's loop ~18 ms: a
        # thread copies them instead (``np.take`` releases the GIL) and hands them on.
        self._write_deferred()
        copied = self._copied = threading.Event()
        outcome: Future[FittedTrees] = Future()
        self._pending = outcome
        _copier().submit(self._hand_to_fitter, self.answered, params, check_seed, copied, outcome)

    def _hand_to_fitter(
        self,
        answered: int,
        params: dict[str, Any],
        check_seed: int,
        copied: threading.Event,
        outcome: Future[FittedTrees],
    ) -> None:
        """(The copying thread.) The first ``answered`` lists' latest ``max_lists`` out of the
        ring, ``copied`` set (the caller writes the ring again), the fit submitted to the
        fitting process; ``outcome`` gets its trees or its error."""
        written: str | None = None
        try:
            try:
                handed = self._hand_over(answered)
            except OSError as e:  # no room in /dev/shm (a container's is 64 MB): a file
                log.warning("reranker lists handed over through a file (shared memory: %s)", e)
                handed = self._write_out(answered)
                written = handed.source
            finally:
                copied.set()
            try:
                fitting = _fitter().submit(_fit_handed, handed, params, check_seed, 1)
            except BrokenProcessPool:  # the fitting process died (killed?): start another
                _fitter.cache_clear()
                fitting = _fitter().submit(_fit_handed, handed, params, check_seed, 1)
        except BaseException as e:  # the caller's _poll / wait() reports it
            _remove(written)
            outcome.set_exception(e)
            return
        fitting.add_done_callback(functools.partial(_settle, outcome, written))

    def _hand_over(self, answered: int) -> HandedLists:
        """:meth:`_snapshot`'s rows copied into the hand-over block. Only one fit is pending
        at a time, so nothing writes the block during a fit."""
        assert self._rows is not None  # a fit follows a stored list
        if self._handover is None:
            _check_room(self._rows.nbytes)
            block = SharedMemory(create=True, size=self._rows.nbytes)
            weakref.finalize(self, _free, block)
            self._handover = block
        shape = (min(answered, self.max_lists), *self._rows.shape[1:])
        view = np.ndarray(shape, self._rows.dtype, buffer=self._handover.buf)
        lengths = self._snapshot(answered, out=view)[1]
        del view  # no view may outlive the block
        return HandedLists(self._handover.name, False, shape, self._rows.dtype.str, lengths)

    def _write_out(self, answered: int) -> HandedLists:
        """:meth:`_snapshot`'s rows written to a temporary file, straight from the ring
        (``tofile`` releases the GIL; pickling them to the fitting process held it ~30 ms, a
        pause of the caller's loop)."""
        ring = self._rows
        assert ring is not None  # a fit follows a stored list
        order = self._ring_order(answered)
        count, start = len(order), int(order[0])  # a fit follows a stored list: count >= 1
        directory = tempfile.gettempdir()
        _remove_orphans(directory)
        fd, path = tempfile.mkstemp(
            prefix=f"{HAND_OVER_PREFIX}{os.getpid()}-", suffix=".rows", dir=directory
        )
        try:
            with os.fdopen(fd, "wb") as file:
                ring[start : start + count].tofile(file)
                ring[: max(0, start + count - self.max_lists)].tofile(file)  # wrapped around
        except BaseException:
            _remove(path)
            raise
        return HandedLists(
            path, True, (count, *ring.shape[1:]), ring.dtype.str, self._lengths[order]
        )

    def _swap_in(self, fitted: FittedTrees) -> None:
        self._pending = None
        self._write_deferred()  # the copy is done: no thread state left to the next fit
        # one assignment: a ranking in flight keeps the trees it read
        self._model = _session(fitted.onnx)
        self.last_fit = fitted
        self._fits += 1
        self.fit_seconds += fitted.seconds


class FittedTrees(NamedTuple):
    onnx: bytes  # the serialised TreeEnsembleRegressor
    seconds: float  # fitting, converting and checking took
    process: int  # the id of the process that fitted them
    openmp_threads: int  # the most OpenMP threads the fit could use (0: no OpenMP runtime)


def fit_lists(
    rows: np.ndarray,
    lengths: np.ndarray,
    params: dict[str, Any],
    check_seed: int,
    threads: int | None = None,
) -> FittedTrees:
    """:func:`fit_trees` on answered lists as :meth:`Reranker.stored` gives them: each list's
    rows in order, its first row the positive (label 1), the others 0."""
    x = rows[np.arange(rows.shape[1]) < lengths[:, None]]
    y = np.zeros(len(x), np.int8)
    y[np.cumsum(lengths) - lengths] = 1
    return fit_trees(x, y, params, check_seed, threads)


class HandedLists(NamedTuple):
    """Where a background fit's lists wait for the fitting process (:func:`_fit_handed`)."""

    source: str  # the shared-memory block's name, or the file's path
    in_file: bool
    shape: tuple[int, ...]  # the rows: lists x the most rows one holds x inputs
    dtype: str
    lengths: np.ndarray  # each list's rows


def _fit_handed(
    handed: HandedLists, params: dict[str, Any], check_seed: int, threads: int
) -> FittedTrees:
    """:func:`fit_lists` on lists handed over by :meth:`Reranker._hand_over` (the block stays
    the reranker's to free) or :meth:`Reranker._write_out` (the file is removed once read):
    the fitting process's side."""
    dtype = np.dtype(handed.dtype)
    if handed.in_file:
        try:
            rows = np.fromfile(handed.source, dtype).reshape(handed.shape)
        finally:
            _remove(handed.source)
        return fit_lists(rows, handed.lengths, params, check_seed, threads)
    block = SharedMemory(name=handed.source)
    try:
        rows = np.ndarray(handed.shape, dtype, buffer=block.buf)
        fitted = fit_lists(rows, handed.lengths, params, check_seed, threads)
        del rows
        return fitted
    finally:
        # after a failed fit its traceback may still hold a view: the mapping then goes with it
        with contextlib.suppress(BufferError):
            block.close()


def _remove(path: str | None) -> None:
    """Remove a hand-over file if there is one (the fitting process may have already)."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _remove_orphans(directory: str) -> None:
    """Remove the hand-over files in ``directory`` whose writer is gone: a process killed
    between writing one and its fit's end leaves it behind (46 MB). A file names its writer's
    process id; one younger than :data:`ORPHAN_AGE_S` is left alone, in case that id belongs
    to another machine or container sharing the directory."""
    old = time.time() - ORPHAN_AGE_S
    with os.scandir(directory) as entries:
        for entry in entries:
            writer = _HAND_OVER_NAME.fullmatch(entry.name)
            if writer is None or _alive(int(writer[1])):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < old:
                    os.unlink(entry.path)
                    log.warning(
                        "removed %s, a reranker's hand-over file left by a dead process", entry.path
                    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and is someone else's
        pass
    return True


def _check_room(size: int) -> None:
    """Raise OSError unless ``/dev/shm`` (where Linux keeps shared memory) has ``size`` bytes
    free: a block is made at its full size without its pages, and touching one past the room
    there kills the process (SIGBUS) rather than raising."""
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return  # no /dev/shm: not Linux, where making the block fails by itself
    free = stats.f_bavail * stats.f_frsize
    if free < size:
        raise OSError(
            errno.ENOSPC, f"/dev/shm has {free / 1e6:.0f} MB free, the lists need {size / 1e6:.0f}"
        )


def _free(block: SharedMemory) -> None:
    """Unmap and remove a reranker's hand-over block (when it is collected, or at exit)."""
    with contextlib.suppress(BufferError, FileNotFoundError):
        block.close()
        block.unlink()


def fit_trees(
    x: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    check_seed: int,
    threads: int | None = None,
) -> FittedTrees:
    """Fit the trees on ``(x, y)`` and convert them to ONNX, checked against sklearn's margins
    on 2,000 rows drawn with ``check_seed``. Pure: it runs the same inline or in the fitting
    process (:func:`_fitter`).

    ``threads``: OpenMP threads for the fit (None: one per core). The worker's background fits
    take 1, leaving the other core to the stream: a synthetic check (330,000 rows × 35, a late
    MovieLens fit's size, beside a busy loop of small numpy products and Python) fitted as fast
    (3.0 / 3.5 s vs 3.5 / 3.5 s), slowed the loop 8-12 % instead of 24 %, and cut its p99 gap
    from ~3 ms to 0.35 ms."""
    start = time.perf_counter()
    model = HistGradientBoostingClassifier(**params)
    with threadpool_limits(threads, user_api="openmp"):
        openmp = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
        model.fit(x, y)
    onnx_model = trees_to_onnx(model, x.shape[1])
    pick = np.random.default_rng(check_seed)
    check = x[pick.choice(len(x), min(len(x), 2000), replace=False)]
    _validate(_session(onnx_model), model, check)
    seconds = time.perf_counter() - start
    return FittedTrees(onnx_model, seconds, os.getpid(), max(openmp, default=0))


#: Rows scored per thread at least: below it a thread's hand-off costs more than it saves.
ROWS_PER_THREAD = 512
SCORING_THREADS = max(1, min(4, os.cpu_count() or 1))


def _margins(model: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """The trees' margins for the rows of ``x``, in up to :data:`SCORING_THREADS` concurrent
    runs over slices of rows. Each run sums its rows' trees on one thread in one order
    (``intra_op_num_threads=1``), so a row's margin is the same float however the rows are
    split: parallel, yet reproducible (ONNX Runtime's own threads split the trees instead)."""
    parts = min(SCORING_THREADS, len(x) // ROWS_PER_THREAD)
    if parts < 2:
        out: np.ndarray = model.run(None, {"x": x})[0][:, 0]
        return out
    slices = np.array_split(x, parts)
    runs = _scorers().map(lambda rows: model.run(None, {"x": rows})[0][:, 0], slices)
    return np.concatenate(list(runs))


@functools.cache
def _scorers() -> ThreadPoolExecutor:
    """Threads for :func:`_margins` (ONNX Runtime releases the GIL while it runs)."""
    return ThreadPoolExecutor(SCORING_THREADS, thread_name_prefix="reranker-score")


def _settle(
    outcome: Future[FittedTrees], written: str | None, fitting: Future[FittedTrees]
) -> None:
    """Pass a finished fit's trees, or its error, on to the reranker's ``outcome``; remove
    the file its lists were ``written`` to, if any, in case the fitting process died first."""
    _remove(written)
    try:
        outcome.set_result(_fitted(fitting))
    except BaseException as e:  # raised again by the reranker's wait()
        outcome.set_exception(e)


def _fitted(fitting: Future[FittedTrees]) -> FittedTrees:
    try:
        return fitting.result()
    except BrokenProcessPool as e:
        raise ModelFitError(
            "the reranker's fitting process died: killed, out of memory, or, run from a script"
            ' without an `if __name__ == "__main__":` guard, stopped as it imported that script'
            " again (the process is spawned)"
        ) from e


@functools.cache
def _copier() -> ThreadPoolExecutor:
    """The thread that copies background fits' lists out of their rings and hands them to
    the fitting process (:meth:`Reranker._hand_to_fitter`), shared by every reranker."""
    return ThreadPoolExecutor(1, thread_name_prefix="reranker-copy")


@functools.cache
def _fitter() -> Executor:
    """One fitting process per process, shared by every reranker (so a pipeline holds no pool
    and stays deep-copyable), started on the first background fit. Not a thread: scikit-learn
    holds the GIL between its OpenMP sections, and a fit in a thread slowed the worker's loop
    all through it (``python -m loadtest.bench_refit``). Spawned, not
    forked: the worker runs threads (Faust, ONNX Runtime) that a fork would copy mid-flight."""
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))


def _session(onnx_model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one summation order: a replay ranks the same twice
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def trees_to_onnx(model: HistGradientBoostingClassifier, n_features: int) -> bytes:
    """A binary HistGradientBoostingClassifier as one ONNX ``TreeEnsembleRegressor`` giving its
    margin (``decision_function``), serialised: the serving path runs it in ONNX Runtime,
    which scores a batch ~10x faster than sklearn's predictor on this machine.

    sklearn sends ``x <= threshold`` left, comparing in float64; the inputs are float32, so each
    threshold becomes the largest float32 not above it, which sends every float32 the same way.
    """
    ids: dict[str, list[int]] = {k: [] for k in ("tree", "node", "feature", "true", "false")}
    modes: list[str] = []
    values: list[float] = []
    missing: list[int] = []
    leaves: dict[str, list[int]] = {"tree": [], "node": []}
    weights: list[float] = []
    for t, (predictor,) in enumerate(model._predictors):
        for n, node in enumerate(predictor.nodes):
            ids["tree"].append(t)
            ids["node"].append(n)
            if node["is_leaf"]:
                modes.append("LEAF")
                ids["feature"].append(0)
                ids["true"].append(0)
                ids["false"].append(0)
                values.append(0.0)
                missing.append(0)
                leaves["tree"].append(t)
                leaves["node"].append(n)
                weights.append(float(node["value"]))
                continue
            if node["is_categorical"]:
                raise ExportValidationError("categorical splits are not exported")
            threshold = np.float32(node["num_threshold"])
            if threshold > node["num_threshold"]:
                threshold = np.nextafter(threshold, np.float32(-np.inf))
            modes.append("BRANCH_LEQ")
            ids["feature"].append(int(node["feature_idx"]))
            ids["true"].append(int(node["left"]))
            ids["false"].append(int(node["right"]))
            values.append(float(threshold))
            missing.append(int(node["missing_go_to_left"]))
    trees = helper.make_node(
        "TreeEnsembleRegressor",
        ["x"],
        ["margin"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        base_values=[float(np.ravel(model._baseline_prediction)[0])],
        nodes_treeids=ids["tree"],
        nodes_nodeids=ids["node"],
        nodes_featureids=ids["feature"],
        nodes_modes=modes,
        nodes_values=values,
        nodes_truenodeids=ids["true"],
        nodes_falsenodeids=ids["false"],
        nodes_missing_value_tracks_true=missing,
        target_ids=[0] * len(weights),
        target_treeids=leaves["tree"],
        target_nodeids=leaves["node"],
        target_weights=weights,
    )
    graph = helper.make_graph(
        [trees],
        "reranker",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["candidates", n_features])],
        [helper.make_tensor_value_info("margin", TensorProto.FLOAT, ["candidates", 1])],
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    return bytes(onnx_model.SerializeToString())


def _validate(
    session: ort.InferenceSession, model: HistGradientBoostingClassifier, x: np.ndarray
) -> None:
    """The ONNX margins match sklearn's on ``x`` and on a single row (atol :data:`ONNX_ATOL`)."""
    for rows in (x, x[:1]):
        got = session.run(None, {"x": rows.astype(np.float32)})[0][:, 0]
        want = model.decision_function(rows)
        worst = float(np.max(np.abs(got - want)))
        if worst > ONNX_ATOL:
            raise ExportValidationError(
                f"reranker trees in ONNX differ from sklearn by {worst:.2e} (atol {ONNX_ATOL})"
            )
