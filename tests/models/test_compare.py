"""Two replays compared target by target (``streamrec compare``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models.compare import (
    ALONE,
    Targets,
    compare_targets,
    load_targets,
    main,
    save_targets,
    with_rerun,
)
from models.errors import ComparisonError
from models.evaluation import evaluate
from models.metrics import Hit
from models.pipeline import PipelineConfig
from models.report import write_report

from .test_evaluation import ENCODER, crafted


def stream(ranks: list[int], platforms: tuple[str, ...] = ("arts", "office")) -> list[Hit]:
    """Targets alternating between ``platforms``; every fourth a cold one."""
    return [
        Hit(10 * i, platforms[i % len(platforms)], r, cold=i % 4 == 0, earlier_here=i % 8 // 4)
        for i, r in enumerate(ranks)
    ]


def runs(stream_ranks: list[int], heldout_ranks: list[int]) -> dict[str, dict[str, Targets]]:
    heldout = [dataclasses.replace(h, index=-1) for h in stream(heldout_ranks)]
    return {
        "blend": {
            "prequential": Targets.of(stream(stream_ranks)),
            "leave_last_out": Targets.of(heldout),
        }
    }


def test_targets_survive_the_file(tmp_path: Path) -> None:
    saved = runs([1, 0, 3, 12], [2, 0])
    path = save_targets(saved, tmp_path)
    loaded = load_targets(tmp_path)
    assert path.name == "targets.npz" and loaded.keys() == saved.keys()
    for section, found in saved["blend"].items():
        for name, values in vars(found).items():
            assert np.array_equal(getattr(loaded["blend"][section], name), values), name


def test_a_run_against_itself_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    a = runs(rng.integers(0, 30, 400).tolist(), rng.integers(0, 30, 100).tolist())
    rows = compare_targets(a, a, "blend", "blend")
    assert [r.measure for r in rows] == [
        "stream NDCG@10, arts",
        "stream NDCG@10, office",
        "stream NDCG@10, all",
        "stream HR@10, all",
        "cold start HR@10 (first positives here)",
        "cold start HR@10, very first positive",
        "leave-last-out NDCG@10, arts",
        "leave-last-out NDCG@10, office",
        "leave-last-out NDCG@10, all",
    ]
    assert all(r.change == 0.0 and r.low == r.high == 0.0 for r in rows)
    assert {r.verdict for r in rows} == {"within the noise"}


def test_a_change_on_one_platform_is_found_there_and_not_elsewhere() -> None:
    rng = np.random.default_rng(1)
    ranks = rng.integers(0, 30, 2000)
    better = ranks.copy()
    arts = np.arange(len(ranks)) % 2 == 0
    better[arts & (ranks > 10) & (rng.random(len(ranks)) < 0.5)] = 1  # half the misses hit
    a, b = runs(ranks.tolist(), [1, 2]), runs(better.tolist(), [1, 2])
    rows = {r.measure: r for r in compare_targets(a, b, "blend", "blend")}
    arts_row, office_row = rows["stream NDCG@10, arts"], rows["stream NDCG@10, office"]
    assert arts_row.b > arts_row.a and arts_row.low is not None and arts_row.low > 0
    assert arts_row.verdict == "higher" and rows["stream NDCG@10, all"].verdict == "higher"
    assert office_row.change == 0.0 and office_row.verdict == "within the noise"
    worse = compare_targets(b, a, "blend", "blend")[0]
    assert worse.measure == "stream NDCG@10, arts" and worse.verdict == "lower"


def test_a_change_no_larger_than_a_reruns_is_not_counted() -> None:
    rng = np.random.default_rng(1)
    ranks = rng.integers(0, 30, 2000)
    better, rerun = ranks.copy(), ranks.copy()
    misses = np.flatnonzero(ranks > 10)
    better[misses[: len(misses) // 2]] = 1  # half the misses hit
    rerun[misses[: len(misses) // 4]] = 1  # a quarter: the seed alone moved it that far
    a, b, a_again = (runs(r.tolist(), [1, 2]) for r in (ranks, better, rerun))
    plain = compare_targets(a, b, "blend", "blend")[2]
    assert plain.measure == "stream NDCG@10, all" and plain.verdict == "higher"
    moved = with_rerun(compare_targets(a, a_again, "blend", "blend"), [])[2]
    assert moved.verdict == "higher" and moved.rerun is None  # nothing to set it against
    against = with_rerun([moved], compare_targets(a, b, "blend", "blend"))[0]
    assert against.rerun == plain.change and against.verdict == "within the rerun's change"
    kept = with_rerun([plain], compare_targets(a, a_again, "blend", "blend"))[0]
    assert kept.rerun == moved.change and kept.verdict == "higher"
    # several reruns: the one that moved furthest, either way, sets the bar
    worse = ranks.copy()
    worse[np.flatnonzero(ranks == 1)[:5]] = 0
    a_worse = runs(worse.tolist(), [1, 2])
    both = with_rerun(
        [moved],
        compare_targets(a, a_worse, "blend", "blend"),
        compare_targets(a, b, "blend", "blend"),
    )[0]
    assert both.reruns[1] == plain.change and both.rerun == plain.change
    assert both.reruns[0] < 0 and both.verdict == "within the reruns' changes"


def test_the_cold_start_without_the_persons_other_platforms_is_compared_when_both_have_it(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    ranks = rng.integers(0, 30, 400).tolist()
    a, b = runs(ranks, [1, 2]), runs(ranks, [1, 2])
    cold = [h for h in stream(ranks) if h.cold]
    hidden = [dataclasses.replace(h, rank=0) for h in cold]  # every one missed without it
    a["blend"][ALONE], b["blend"][ALONE] = Targets.of(cold), Targets.of(hidden)
    save_targets(b, tmp_path)
    rows = {r.measure: r for r in compare_targets(a, load_targets(tmp_path), "blend", "blend")}
    row = rows["cold start HR@10, own history elsewhere hidden"]
    assert row.n == len(cold) and row.b == 0.0 and row.a == rows[
        "cold start HR@10 (first positives here)"
    ].a
    del b["blend"][ALONE]  # a run of a model that cannot rank quietly: no such row
    measures = [r.measure for r in compare_targets(a, b, "blend", "blend")]
    assert "cold start HR@10, own history elsewhere hidden" not in measures

def test_runs_over_other_targets_or_without_the_model_are_refused() -> None:
    a = runs([1, 2, 3, 4], [1])
    with pytest.raises(ComparisonError, match="same prequential targets"):
        compare_targets(a, runs([1, 2, 3], [1]), "blend", "blend")
    with pytest.raises(ComparisonError, match=r"run B has no model 'popularity'.*blend"):
        compare_targets(a, a, "blend", "popularity")
    # leave-last-out targets all sit at position -1: whose they are tells them apart
    named = runs([1, 2, 3, 4], [1, 2])
    others = runs([1, 2, 3, 4], [1, 2])
    for run, people in ((named, ["u1", "u2"]), (others, ["u1", "u3"])):
        held = run["blend"]["leave_last_out"]
        run["blend"]["leave_last_out"] = dataclasses.replace(held, person=np.array(people))
    with pytest.raises(ComparisonError, match="same leave_last_out targets"):
        compare_targets(named, others, "blend", "blend")
    del others["blend"]["leave_last_out"]
    with pytest.raises(ComparisonError, match="only run A has leave_last_out targets"):
        compare_targets(named, others, "blend", "blend")


def test_compare_two_reports_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = crafted()
    vectors = ENCODER.encode([it.text() for it in ds.items])
    for name, config in (("a", PipelineConfig()), ("b", PipelineConfig(popularity_half_life_s=5))):
        result = evaluate(ds, ENCODER, None, vectors=vectors, progress=False,
                          models=("popularity", "covisit"), config=config)
        write_report(result, tmp_path / name)
    out = tmp_path / "ab.md"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--model", "covisit",
                 "--model-b", "popularity", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text == out.read_text() + f"\nplot: {out.with_suffix('.png')}\n"
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert "popularity_half_life_s: default → 5" in text
    assert "| stream NDCG@10, all | 10 |" in text
    rerun = ["--rerun", str(tmp_path / "a"), "--model", "popularity"]
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), *rerun]) == 0
    assert "| A rerun over A |" in capsys.readouterr().out
    twice = [*rerun, "--rerun", str(tmp_path / "b")]
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), *twice]) == 0
    text = capsys.readouterr().out
    assert "| A's reruns over A |" in text and "| +0.0 % / " in text
    # an `evaluate --out` folder names its one dataset folder
    (tmp_path / "runs").mkdir()
    (tmp_path / "a").rename(tmp_path / "runs" / "toy")
    assert main([str(tmp_path / "runs"), str(tmp_path / "b"), "--model", "covisit"]) == 0
    assert "| stream NDCG@10, all | 10 |" in capsys.readouterr().out
    (tmp_path / "runs" / "toy").rename(tmp_path / "a")
    (tmp_path / "a" / "targets.npz").unlink()
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "targets.npz not found" in capsys.readouterr().err
