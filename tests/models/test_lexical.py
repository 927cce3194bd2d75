from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from models.lexical import LexicalIndex

WORDS = [f"w{i}" for i in range(60)] + ["sulky", "rayon", "thread", "lamp", "desk"]


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    # Zipf-like: a few words in most texts, many rare ones; repeats exercise sublinear tf
    weights = [1.0 / (i + 1) for i in range(len(WORDS))]
    return [" ".join(rng.choices(WORDS, weights, k=rng.randint(1, 12))) for _ in range(n)]


def reference(texts: list[str]) -> np.ndarray:
    """The same weighting by scikit-learn, as dense unit rows."""
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, token_pattern=r"(?u)\b\w\w+\b")
    return np.asarray(vectorizer.fit_transform(texts).todense(), np.float32)


def test_nearest_is_the_best_tfidf_cosine_as_scikit_learn_weighs_it() -> None:
    texts = random_texts(300, seed=1)
    lex = LexicalIndex()
    for row, text in enumerate(texts):
        lex.upsert(row, text)
    x = reference(texts)
    rng = np.random.default_rng(2)
    for size in (1, 3, 10):  # tables of several widths, each reused across calls
        for _ in range(5):
            rows = rng.integers(0, len(texts), 40)
            of = rng.integers(0, len(texts), size)
            want = (x[rows] @ x[of].T).max(axis=1)
            np.testing.assert_allclose(lex.nearest(rows, of), want, atol=1e-6)


def test_a_changed_text_updates_document_frequencies() -> None:
    """Re-indexing rows with new texts must give what indexing the final texts gives."""
    texts = random_texts(120, seed=3)
    lex = LexicalIndex()
    for row, text in enumerate(texts):
        lex.upsert(row, text)
    lex.nearest(np.arange(10), np.arange(3))  # built once before the changes
    final = list(texts)
    for row, text in zip(range(0, 120, 7), random_texts(18, seed=4), strict=True):
        final[row] = text
        lex.upsert(row, text)
    lex.upsert(5, final[5])  # the same text again: no change
    x = reference(final)
    rows, of = np.arange(120), np.array([0, 7, 8, 50])
    np.testing.assert_allclose(lex.nearest(rows, of), (x @ x[of].T).max(axis=1), atol=1e-6)


def test_shared_rare_words_beat_shared_common_ones() -> None:
    lex = LexicalIndex()
    texts = [
        "sulky rayon thread red",
        "sulky rayon thread blue",
        "gutermann cotton thread red",
        "cotton thread blue",
        "office desk lamp",
        "office desk chair",
    ]
    for row, text in enumerate(texts):
        lex.upsert(row, text)
    sims = lex.nearest(np.array([1, 2, 3, 4]), np.array([0]))
    assert sims[0] > sims[1] > 0.0  # the same brand and line vs "thread" and "red"
    assert sims[3] == 0.0  # nothing in common


def test_unknown_rows_and_empty_queries_score_zero() -> None:
    lex = LexicalIndex()
    lex.upsert(0, "sulky rayon thread")
    lex.upsert(2, "sulky rayon thread")  # row 1 never indexed
    sims = lex.nearest(np.array([0, 1, 2, 9]), np.array([0]))
    assert sims.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0])
    assert not lex.nearest(np.array([0, 2]), np.array([], np.int64)).any()
    assert not lex.nearest(np.array([0, 2]), np.array([9])).any()
    assert len(LexicalIndex().nearest(np.array([3]), np.array([1]))) == 1


def exact_top(lex: LexicalIndex, of: np.ndarray, among: np.ndarray, n: int) -> np.ndarray:
    sims = lex.nearest(among, of)
    order = np.argsort(-sims, kind="stable")[:n]
    return among[order[sims[order] > 0.0]]


def test_search_with_every_word_is_the_exact_top_n() -> None:
    texts = random_texts(400, seed=5)
    lex = LexicalIndex(rare_share=1.0)
    for row, text in enumerate(texts):
        lex.upsert(row, text)
    rng = np.random.default_rng(6)
    among = np.arange(50, 350)  # one platform's rows
    for size in (1, 4, 10):
        of = rng.integers(0, 400, size)
        found = lex.search(of, among, 20)
        want = exact_top(lex, of, among, 20)
        sims = lex.nearest(found, of)
        assert set(found) <= set(among.tolist())
        assert (np.diff(sims) <= 0).all() and (sims > 0).all()
        # the same scores (ties may come out in another order)
        np.testing.assert_allclose(sims, lex.nearest(want, of), atol=1e-6)


def test_search_finds_rows_through_rare_words_only() -> None:
    lex = LexicalIndex(rare_share=0.3)
    texts = ["arts crafts sulky thread", "arts crafts sulky ribbon", "arts crafts paint"]
    texts += ["arts crafts brush", "arts crafts canvas", "arts crafts sulky needle"]
    for row, text in enumerate(texts):
        lex.upsert(row, text)
    found = lex.search(np.array([0]), np.arange(6), 10).tolist()
    # "sulky" is in 3 of 6 rows (more than 30 %): only rows sharing a rarer word are found
    assert found == [0]
    lex.upsert(6, "sulky thread red")  # a new item: the index is rebuilt
    assert lex.search(np.array([0]), np.arange(7), 10).tolist() == [0, 6]


def test_a_small_platform_finds_the_rows_sharing_a_word_with_the_query() -> None:
    lex = LexicalIndex()
    texts = ["sulky rayon thread red", "sulky rayon thread blue"]
    texts += [f"filler{i} item{i} words{i}" for i in range(38)]  # 40 rows: 2 % is under one
    for row, text in enumerate(texts):
        lex.upsert(row, text)
    assert 1 in lex.shortlist(np.array([0]), np.arange(40), 50).tolist()


def test_the_matrix_is_rebuilt_once_enough_texts_changed() -> None:
    lex = LexicalIndex(rebuild_share=0.01)
    for row in range(200):
        lex.upsert(row, f"item w{row % 20} v{row}")
    lex.nearest(np.array([0]), np.array([1]))  # built
    lex.upsert(200, "sulky rayon thread")
    lex.upsert(201, "sulky rayon thread red")
    # 2 of 202 changed, under 1 %: the matrix of 200 rows is still served
    assert not lex.nearest(np.array([200]), np.array([201])).any()
    lex.upsert(202, "sulky thread")
    assert lex.nearest(np.array([200]), np.array([201]))[0] > 0.5


def test_searches_of_alternating_platforms_stay_on_their_platform() -> None:
    texts = random_texts(400, seed=7)
    lex = LexicalIndex(rare_share=1.0)
    for row, text in enumerate(texts):
        lex.upsert(row, text)
    # two platforms of the same size with the same first and last rows, interleaved between
    inner = np.arange(1, 399)
    a = np.concatenate([[0], inner[inner % 2 == 0], [399]])
    b = np.concatenate([[0], inner[inner % 2 == 1], [399]])
    assert len(a) == len(b)
    of = np.array([3, 10, 77])
    for among in (a, b, a, b):
        found = lex.search(of, among, 20)
        assert len(found) > 0 and set(found.tolist()) <= set(among.tolist())
        np.testing.assert_allclose(
            lex.nearest(found, of), lex.nearest(exact_top(lex, of, among, 20), of), atol=1e-6
        )
    for name, among in (("a", a), ("b", b), ("a", a), ("b", b)):  # named by the caller
        named = lex.shortlist(of, among, 20, among_key=name)
        assert named.tolist() == lex.shortlist(of, among, 20).tolist()


def test_warm_up_compiles_each_loop_for_the_types_real_calls_use() -> None:
    """A worker warms up at start so its first event does not pay numba's compile (~1 s)."""
    probe = (
        "import numpy as np\n"
        "from models import lexical\n"
        "lexical.warm_up()\n"
        "before = [len(lexical._nearest.signatures), len(lexical._partial_sums.signatures)]\n"
        "lex = lexical.LexicalIndex()\n"
        "for row in range(300):\n"
        "    lex.upsert(row, f'item w{row % 7} v{row % 40} z{row}')\n"
        "lex.search(np.array([3, 9]), np.arange(300), 10)\n"
        "lex.search(np.array([5]), np.arange(300), 10)\n"  # a slice of the wider scratch
        "after = [len(lexical._nearest.signatures), len(lexical._partial_sums.signatures)]\n"
        "print(before, after)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["[1,", "1]", "[1,", "1]"]
