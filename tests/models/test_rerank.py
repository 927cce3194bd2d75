"""The second-stage reranker, alone and inside the pipeline."""

from __future__ import annotations

import contextlib
import copy
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from unittest import mock

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_info

from models import rerank
from models.errors import ConfigError, ExportValidationError, ModelFitError, ModelNotReadyError
from models.events import CatalogItem
from models.pipeline import Pipeline, PipelineConfig, RankRequest
from models.rerank import Reranker, trees_to_onnx
from models.session import SessionState

from ..fakes import HashingEncoder
from .test_pipeline import THEMES, ev, make_pipeline, run


def xor_list(rng: np.random.Generator, n: int = 40) -> tuple[np.ndarray, int]:
    """A list whose engaged candidate is the one where two signals disagree (XOR): no linear
    blend of the two can put it first."""
    f = np.zeros((n, 2), np.float32)
    f[: n // 2, 0] = 1.0
    f[: n // 4, 1] = 1.0
    f[n // 2 : 3 * n // 4, 1] = 1.0
    f[:, :] += rng.normal(0, 0.05, f.shape).astype(np.float32)
    positive = n // 4  # x0 = 1, x1 = 0: the first of the XOR rows
    f[n // 4 + 1 : n // 2, 0] = 0.0  # the other (1, 0) rows become (0, 0): one XOR row left
    order = rng.permutation(n)
    return f[order], int(np.flatnonzero(order == positive)[0])


def test_not_ready_before_the_first_fit() -> None:
    rr = Reranker(retrain_every=3, max_iter=10)
    rng = np.random.default_rng(0)
    with pytest.raises(ModelNotReadyError):
        rr.score(xor_list(rng)[0])
    rr.learn_one(*xor_list(rng))
    rr.learn_one(*xor_list(rng))
    assert not rr.ready and rr.fits == 0
    rr.learn_one(*xor_list(rng))
    assert rr.ready and rr.fits == 1


def test_learns_an_interaction_a_linear_blend_cannot() -> None:
    rng = np.random.default_rng(1)
    rr = Reranker(retrain_every=300, negatives=10, max_iter=50)
    for _ in range(300):
        rr.learn_one(*xor_list(rng))
    first = []
    for _ in range(50):
        f, positive = xor_list(rng)
        first.append(int(np.argmax(rr.score(f))) == positive)
    assert np.mean(first) > 0.9


def test_inputs_add_the_blend_position() -> None:
    f = np.ones((3, 2), np.float32)
    assert np.allclose(Reranker.inputs(f)[:, 2], [1.0, 0.5, 1.0 / 3])


def test_inputs_repeat_the_request_values_on_every_row() -> None:
    f = np.ones((3, 2), np.float32)
    x = Reranker.inputs(f, np.array([2, 0]), np.array([7.0, 8.0]))
    assert x.shape == (2, 5)
    assert np.array_equal(x[:, 3:], [[7.0, 8.0], [7.0, 8.0]])


def test_request_values_let_the_trees_trust_a_signal_for_some_people_only() -> None:
    """People of one kind engage with the candidate best in signal 0, the others with the one
    best in signal 1: a list's own signals cannot say which, its request value can."""
    rng = np.random.default_rng(9)

    def shown() -> tuple[np.ndarray, int, np.ndarray]:
        f = rng.uniform(0.0, 0.8, (30, 2)).astype(np.float32)
        f[0, 0] = f[1, 1] = 1.0  # the best in signal 0, the best in signal 1
        kind = int(rng.integers(2))
        order = rng.permutation(30)
        return f[order], int(np.flatnonzero(order == kind)[0]), np.array([kind], np.float32)

    hits = {}
    for uses_request in (True, False):
        rr = Reranker(retrain_every=300, negatives=10)
        for _ in range(300):
            f, positive, request = shown()
            rr.learn_one(f, positive, request if uses_request else None)
        tests = [shown() for _ in range(200)]
        hits[uses_request] = np.mean(
            [
                int(np.argmax(rr.score(f, request if uses_request else None))) == positive
                for f, positive, request in tests
            ]
        )
    assert hits[True] > 0.9
    assert hits[False] < 0.75  # a guess between the two signals' best


def learn_and_wait(rr: Reranker, rng: np.random.Generator, lists: int) -> None:
    """``rr`` learns ``lists`` XOR lists, then any fit they started is served."""
    for _ in range(lists):
        rr.learn_one(*xor_list(rng))
    rr.wait()


def test_keeps_only_the_latest_lists() -> None:
    rr = Reranker(retrain_every=1000, negatives=2, max_lists=5)
    rng = np.random.default_rng(2)
    shown = [xor_list(rng) for _ in range(12)]
    for features, positive in shown:
        rr.learn_one(features, positive)
    rows, lengths = rr.stored()
    assert lengths.tolist() == [3] * 5  # the positive and 2 negatives
    # the latest 5, oldest first, each its positive first
    for kept, (features, positive) in zip(rows, shown[-5:], strict=True):
        width = features.shape[1]
        assert np.array_equal(kept[0, :width], features[positive])
        assert not any(np.array_equal(kept[j, :width], features[positive]) for j in (1, 2))


def test_background_fit_swaps_the_trees_in_when_done() -> None:
    rr = Reranker(retrain_every=50, negatives=5, max_iter=20, background=True)
    rng = np.random.default_rng(3)
    for _ in range(50):
        rr.learn_one(*xor_list(rng))
    rr.wait()
    assert rr.ready and rr.fits == 1
    assert rr.score(xor_list(rng)[0]).shape == (40,)
    rr._pending = Future()  # a fit still running: the next trigger is skipped, not recorded
    for _ in range(50):
        rr.learn_one(*xor_list(rng))
    assert rr.fitted_at == [50] and rr.fits == 1


def test_a_fitted_reranker_deep_copied_scores_alike_and_learns_on_its_own() -> None:
    rr = Reranker(retrain_every=50, negatives=5, max_iter=20)
    rng = np.random.default_rng(3)
    for _ in range(50):
        rr.learn_one(*xor_list(rng))
    assert rr.ready
    clone = copy.deepcopy(rr)
    features = xor_list(rng)[0]
    assert np.array_equal(clone.score(features), rr.score(features))
    clone.learn_one(*xor_list(rng))
    assert (clone.answered, rr.answered) == (51, 50)
    # and a pipeline holding one (the tests' and replays' what-ifs)
    p = themed_pipeline(rerank_every=None)
    p.reranker = rr
    copied = copy.deepcopy(p).reranker
    assert copied is not None and copied.ready


def test_stored_lists_include_those_answered_while_a_fit_copies_the_ring() -> None:
    gate = threading.Event()
    rerank._copier().submit(gate.wait)  # the copying thread busy: the fit's copy waits
    threading.Timer(0.3, gate.set).start()
    rr = Reranker(retrain_every=5, negatives=2, max_lists=8, max_iter=5, background=True)
    for i in range(7):  # a fit starts at the 5th; the 6th and 7th wait for its copy
        rr.learn_one(np.full((4, 2), float(i + 1), np.float32), 0)
    rows, lengths = rr.stored()
    assert rows[:, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert lengths.tolist() == [3] * 7
    with contextlib.suppress(ModelFitError):  # so few rows may not fit; not what is tested
        rr.wait()


@pytest.mark.parametrize("lists_learned", [60, 75])  # the ring (max 70) full or wrapped
def test_a_background_fit_gives_the_inline_fits_trees(
    lists_learned: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """Inline; in the fitting process, the lists in shared memory; and, without room for a
    shared block, through a temporary file (logged), removed once read."""
    rng = np.random.default_rng(5)
    lists = [xor_list(rng) for _ in range(lists_learned)]
    probe = xor_list(rng)[0]
    scores = []
    for way in ("inline", "shared", "file"):
        if way == "file":  # /dev/shm too small (a container's is 64 MB by default)
            monkeypatch.setattr(
                rerank.os, "statvfs", lambda path: mock.Mock(f_bavail=0, f_frsize=4096)
            )
            monkeypatch.setattr(rerank.tempfile, "tempdir", str(tmp_path))
        rr = Reranker(
            retrain_every=lists_learned,
            negatives=5,
            max_lists=70,
            max_iter=20,
            background=way != "inline",
        )
        for f, positive in lists:
            rr.learn_one(f, positive)
        rr.wait()
        assert rr.fits == 1
        scores.append(rr.score(probe))
    assert np.array_equal(scores[0], scores[1]) and np.array_equal(scores[0], scores[2])
    assert "handed over through a file" in caplog.text
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("lists_learned", [40, 75])
def test_the_hand_over_file_holds_the_stored_lists_in_order(lists_learned: int) -> None:
    rr = Reranker(retrain_every=1000, negatives=5, max_lists=70)
    rng = np.random.default_rng(10)
    for _ in range(lists_learned):
        rr.learn_one(*xor_list(rng))
    handed = rr._write_out(rr.answered)
    try:
        written = np.fromfile(handed.source, np.dtype(handed.dtype)).reshape(handed.shape)
    finally:
        os.unlink(handed.source)
    rows, lengths = rr.stored()
    assert handed.in_file and np.array_equal(written, rows)
    assert np.array_equal(handed.lengths, lengths)


def test_writing_a_hand_over_file_removes_those_left_by_dead_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A process killed while its fit's lists waited in a file leaves it behind: the next
    writer removes it, once it is old enough not to be another machine's file in use."""
    monkeypatch.setattr(rerank.tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    old = time.time() - rerank.ORPHAN_AGE_S - 1
    names = {
        "orphan": f"streamrec-reranker-{gone.pid}-abc_12.rows",
        "recent": f"streamrec-reranker-{gone.pid}-def34.rows",
        "alive": f"streamrec-reranker-{os.getppid()}-ghi56.rows",
        "other": f"streamrec-reranker-{gone.pid}-abc12.npy",
    }
    for what, name in names.items():
        (tmp_path / name).write_bytes(b"rows")
        if what != "recent":
            os.utime(tmp_path / name, (old, old))
    rr = Reranker(retrain_every=1000, negatives=5, max_lists=70)
    rng = np.random.default_rng(10)
    for _ in range(20):
        rr.learn_one(*xor_list(rng))
    handed = rr._write_out(rr.answered)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {n for w, n in names.items() if w != "orphan"} | {Path(handed.source).name}
    assert Path(handed.source).name.startswith(f"streamrec-reranker-{os.getpid()}-")


def test_serve_after_serves_a_background_fit_at_the_same_list_whatever_its_speed() -> None:
    """A replay's way: the trees fitted on the first 40 lists serve from the 50th on, not when
    the fitting process happens to finish, and they are the inline fit's trees."""
    rng = np.random.default_rng(6)
    lists = [xor_list(rng) for _ in range(60)]
    probe = xor_list(rng)[0]
    inline = Reranker(retrain_every=40, negatives=5, max_iter=20)
    rr = Reranker(retrain_every=40, negatives=5, max_iter=20, background=True, serve_after=10)
    for f, positive in lists[:40]:
        inline.learn_one(f, positive)
        rr.learn_one(f, positive)
    assert rr._pending is not None
    deadline = time.monotonic() + 60
    while not rr._pending.done() and time.monotonic() < deadline:  # done, yet not due
        time.sleep(0.05)
    for f, positive in lists[40:49]:
        rr.learn_one(f, positive)
    assert not rr.ready and rr.answered == 49
    rr.learn_one(*lists[49])
    assert rr.ready and rr.fits == 1 and rr._pending is None
    assert np.array_equal(rr.score(probe), inline.score(probe))
    with pytest.raises(ValueError, match="serve_after"):
        Reranker(retrain_every=40, background=True, serve_after=40)


def test_lists_answered_while_a_fit_copies_out_wait_and_the_fit_sees_only_the_earlier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A background fit's lists are copied out by a thread, not by the caller: while the copy
    has not run, learn_one goes on and its lists wait outside the ring; the fit still sees
    exactly the lists before it (the inline fit's trees), and the ring gets the later ones."""
    rng = np.random.default_rng(4)
    lists = [xor_list(rng) for _ in range(60)]
    probe = xor_list(rng)[0]
    inline = Reranker(retrain_every=50, negatives=5, max_iter=20)
    rr = Reranker(retrain_every=50, negatives=5, max_iter=20, background=True)
    release = threading.Event()
    hand_over = Reranker._hand_over

    def held(self: Reranker, answered: int) -> rerank.HandedLists:
        assert release.wait(60)
        return hand_over(self, answered)

    monkeypatch.setattr(Reranker, "_hand_over", held)
    for f, positive in lists[:50]:
        inline.learn_one(f, positive)
        rr.learn_one(f, positive)
    for f, positive in lists[50:]:  # the copy is held: the caller is not
        rr.learn_one(f, positive)
    assert rr.answered == 60 and len(rr._deferred) == 10 and not rr.ready
    release.set()
    rr.wait()
    assert rr.fits == 1 and np.array_equal(rr.score(probe), inline.score(probe))
    assert not rr._deferred and rr._copied is None  # written at the swap
    for f, positive in lists[50:]:
        inline.learn_one(f, positive)
    rows, lengths = rr.stored()
    want_rows, want_lengths = inline.stored()
    assert np.array_equal(rows, want_rows) and np.array_equal(lengths, want_lengths)


def test_the_hand_over_block_is_reused_and_freed_with_the_reranker() -> None:
    rr = Reranker(retrain_every=40, negatives=5, max_iter=5, background=True)
    rng = np.random.default_rng(9)
    learn_and_wait(rr, rng, 40)
    assert rr._handover is not None
    name = rr._handover.name
    learn_and_wait(rr, rng, 40)
    assert rr.fits == 2 and rr._handover.name == name
    del rr
    gc.collect()
    with pytest.raises(FileNotFoundError):
        SharedMemory(name=name)


def test_a_background_fit_runs_in_another_process_on_one_openmp_thread() -> None:
    """Not in a thread of this one (scikit-learn holds the GIL between its OpenMP sections,
    pausing the stream), and leaving the other cores to the stream; an inline fit (a replay)
    runs here, on every core OpenMP has."""
    rng = np.random.default_rng(3)
    fits = {}
    for background in (True, False):
        rr = Reranker(retrain_every=50, negatives=5, max_iter=5, background=background)
        learn_and_wait(rr, rng, 50)
        assert rr.last_fit is not None
        fits[background] = rr.last_fit
    assert fits[True].process != os.getpid() and fits[True].openmp_threads == 1
    everywhere = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
    assert fits[False].process == os.getpid()
    assert fits[False].openmp_threads == max(everywhere, default=0)


def test_a_killed_fitting_process_is_replaced_at_the_next_fit() -> None:
    rr = Reranker(retrain_every=40, negatives=5, max_iter=20, background=True)
    rng = np.random.default_rng(8)
    learn_and_wait(rr, rng, 40)
    assert rr.last_fit is not None
    killed = rr.last_fit.process
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not rerank._fitter()._broken and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    learn_and_wait(rr, rng, 40)
    assert rr.fits == 2 and rr.failed_fits == 0
    assert rr.last_fit.process not in (killed, os.getpid())


def test_a_background_reranker_made_while_a_spawned_process_starts_names_the_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the fitting process does when it imports an unguarded script again: stop there,
    not run the script until its first fit."""
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(ConfigError, match="__main__"):
        Reranker(background=True)
    Reranker(background=False)  # inline fits spawn nothing


def test_a_fitting_process_that_died_during_a_fit_is_named_in_the_error() -> None:
    died: Future[rerank.FittedTrees] = Future()
    died.set_exception(BrokenProcessPool("terminated abruptly"))
    outcome: Future[rerank.FittedTrees] = Future()
    rerank._settle(outcome, None, died)
    error = outcome.exception()
    assert isinstance(error, ModelFitError) and "guard" in str(error)
    assert isinstance(error.__cause__, BrokenProcessPool)


def test_a_failed_background_fit_is_logged_and_the_old_trees_keep_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rr = Reranker(retrain_every=40, negatives=5, max_iter=20, background=True)
    rng = np.random.default_rng(7)
    for _ in range(40):
        rr.learn_one(*xor_list(rng))
    rr.wait()
    served = rr._model
    failed: Future = Future()
    failed.set_exception(ExportValidationError("trees differ"))
    rr._pending = failed
    rr.learn_one(*xor_list(rng))
    assert rr._model is served and rr.failed_fits == 1 and rr._pending is None
    assert "trees differ" in caplog.text
    for _ in range(40):  # and the next trigger fits again
        rr.learn_one(*xor_list(rng))
    rr.wait()
    assert rr.fits == 2 and rr._model is not served


def test_onnx_trees_give_sklearns_margins_even_on_the_thresholds() -> None:
    rng = np.random.default_rng(4)
    # few distinct values: sklearn then splits halfway between two of them, a float64 that
    # float32 cannot hold (with many values it splits on quantiles, which are data values)
    x = (rng.integers(0, 40, (3000, 4)) / 7).astype(np.float32)
    y = ((x[:, 0] > 2.5) ^ (x[:, 1] > 1.5)).astype(int)
    for leaves in (15, 2):
        model = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=leaves).fit(x, y)
        _check_onnx(model, x, rng)


def _check_onnx(
    model: HistGradientBoostingClassifier, x: np.ndarray, rng: np.random.Generator
) -> None:
    session = ort.InferenceSession(trees_to_onnx(model, 4), providers=["CPUExecutionProvider"])
    # rows sitting on each split's threshold, and the float32s either side of it (with stumps,
    # max_leaf_nodes=2, every row reaches every split)
    nodes = [n for (p,) in model._predictors for n in p.nodes if not n["is_leaf"]]
    edge = np.tile(x[:1], (3 * len(nodes), 1))
    for i, n in enumerate(nodes):
        t = np.float32(n["num_threshold"])
        for j, v in enumerate((np.nextafter(t, -np.inf), t, np.nextafter(t, np.inf))):
            edge[3 * i + j, n["feature_idx"]] = v
    for rows in (rng.random((500, 4)).astype(np.float32), edge, x[:1]):
        got = session.run(None, {"x": rows})[0][:, 0]
        assert np.allclose(got, model.decision_function(rows), atol=1e-5)


def themed_pipeline(
    rerank_every: int | None, feedback_tail: int = 50, rerank_top: int = 50
) -> Pipeline:
    config = PipelineConfig(
        rerank_every=rerank_every, feedback_tail=feedback_tail, rerank_top=rerank_top
    )
    p = Pipeline(HashingEncoder(dim=64), None, config)
    p.add_items(
        [
            CatalogItem(item=f"{t}-{i}", platform="shop", title=f"{w} {t} {i}", tags=[t])
            for t, w in THEMES.items()
            for i in range(8)
        ]
    )
    return p


def engage(p: Pipeline, rounds: int) -> list:
    """People view an item, then click the 4th item of the list they were shown."""
    sessions: dict[str, SessionState] = {}
    ids: dict[str, str] = {}
    recs = []
    n = 0
    for r in range(rounds):
        user = f"u{r}"
        n += 1
        rec = run(p, [ev(n, "shop", user, f"{list(THEMES)[r % 3]}-{r % 8}")], sessions, ids)[0]
        recs.append(rec)
        n += 1
        run(p, [ev(n, "shop", user, rec.items[3].item, "click")], sessions, ids)
    return recs


def test_pipeline_serves_the_reranked_order_and_feeds_back_the_blend_order() -> None:
    # no sample of the tail: the blend keeps its own top 10 and the 10 shown
    p = themed_pipeline(rerank_every=40, feedback_tail=0)
    p.reranker = Reranker(retrain_every=40, min_samples_leaf=5)  # 40 lists: small leaves
    engage(p, 40)  # the blend's order is served until the fit on the 40th answered list
    assert p.reranker is not None and p.reranker.fits == 1
    request = RankRequest(
        "new",
        "shop",
        SessionState(person="new"),
        p.catalog.vector("shop:jazz-1"),
        frozenset({"shop:jazz-1"}),
        ts=2000.0,
    )
    ranking = p.recommend([request])[0]
    assert ranking.by_blend is not None
    blend_keys, blend_features = ranking.by_blend
    assert sorted(blend_keys) == sorted(ranking.keys)
    # people always took the blend's 4th: the trees learned it and serve it first
    assert ranking.keys[0] == blend_keys[3]
    assert list(ranking.scores) == sorted(ranking.scores, reverse=True)
    rec = run(p, [ev(999, "shop", "late", "run-1")], {}, {})[0]
    scores = [item.score for item in rec.items]  # the trees' probabilities, best first
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    # the blend and the trees learn from the list in the blend's order
    shown = p._feedback[("new", "shop")]
    assert shown.keys == blend_keys and np.array_equal(shown.features, blend_features)
    assert shown.kept[:10] == list(range(10))
    # ...and from every item shown (the trees' top 10), wherever the blend had put it
    shown_at = {blend_keys.index(key) for key in ranking.keys[:10]}
    assert max(shown_at) >= 10 and set(shown.kept) == set(range(10)) | shown_at
    # ...and from what was known of the request: no history for "new"
    assert np.array_equal(shown.request_features, ranking.request_features)
    assert ranking.request_features[:3].tolist() == [0.0, 0.0, 0.0]


def test_every_published_item_has_the_trees_score_even_past_rerank_top() -> None:
    p = themed_pipeline(rerank_every=40, rerank_top=3)  # below top_k (10)
    p.reranker = Reranker(retrain_every=40, min_samples_leaf=5)
    engage(p, 40)
    rec = run(p, [ev(999, "shop", "late", "run-1")], {}, {})[0]
    scores = [item.score for item in rec.items]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    assert all(0 < s <= 1 for s in scores)  # past the 3rd they were 0


def test_request_features_say_how_much_history_the_person_has() -> None:
    p = themed_pipeline(rerank_every=None)
    sessions: dict[str, SessionState] = {}
    run(p, [ev(i, "shop", "ann", f"jazz-{i}") for i in range(1, 4)], sessions, {})
    (person, session), *_ = sessions.items()
    ranking = p.recommend([RankRequest(person, "shop", session, ts=100.0)])[0]
    recent_here, recent_elsewhere, events = ranking.request_features[:3]
    assert recent_here == pytest.approx(np.log1p(3)) and recent_elsewhere == 0.0
    assert events == pytest.approx(np.log1p(3))
    assert ranking.request_features[3] > 0  # co-visitation found something for her


def test_request_features_count_other_platforms_events_only_with_consent() -> None:
    p = make_pipeline(PipelineConfig(rerank_every=None))
    session = SessionState(person="ann")
    for i, key in enumerate(["shop:jazz-1", "shop:jazz-2", "shop:jazz-3", "video:run-1"]):
        platform = key.split(":")[0]
        session.observe(
            platform, key, p.catalog.vector(key), float(i), consumed=False, half_life_s=9.0
        )
    for consent, events in ((True, 4), (False, 3)):
        session.consent = consent
        ranking = p.recommend([RankRequest("ann", "shop", session, ts=100.0)])[0]
        assert ranking.request_features[2] == pytest.approx(np.log1p(events))


def test_pipeline_without_reranker_serves_the_blend() -> None:
    p = themed_pipeline(rerank_every=None)
    recs = engage(p, 12)
    assert p.reranker is None
    for rec in recs:
        totals = [sum(item.contributions.values()) for item in rec.items]
        assert np.allclose([item.score for item in rec.items], totals, atol=1e-4)


def test_scoring_in_threads_gives_every_row_the_same_float(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    rr = Reranker(retrain_every=200, negatives=10, max_iter=30)
    for _ in range(200):
        rr.learn_one(*xor_list(rng))
    lists = [xor_list(rng)[0] for _ in range(60)]  # 2,400 rows
    monkeypatch.setattr(rerank, "SCORING_THREADS", 1)
    alone = rr.score_many(lists)
    for threads, per_thread in ((2, 512), (3, 100), (4, 1)):
        monkeypatch.setattr(rerank, "SCORING_THREADS", threads)
        monkeypatch.setattr(rerank, "ROWS_PER_THREAD", per_thread)
        rerank._scorers.cache_clear()
        split = rr.score_many(lists)
        assert all(np.array_equal(a, b) for a, b in zip(alone, split, strict=True))
    rerank._scorers.cache_clear()
    assert all(np.array_equal(rr.score(f), a) for f, a in zip(lists[:5], alone[:5], strict=True))
