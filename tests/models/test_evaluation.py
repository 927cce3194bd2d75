"""Replay evaluation on tiny synthetic streams: known answers, prequential order, no leaks."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from models.artifacts import read_spec
from models.catalog import Catalog
from models.datasets import Dataset
from models.evaluation import (
    _Replayer,
    build_catalog,
    default_models,
    embed_items,
    evaluate,
    main,
    replay,
    served_run,
)
from models.events import CatalogItem, Event, EventType
from models.metrics import hit_rate
from models.pipeline import Pipeline, PipelineConfig, RankRequest
from models.recommenders import (
    BlendRecommender,
    PopularityBaseline,
)
from models.report import write_report
from models.session import MAX_CONSUMED, SessionState

from ..fakes import HashingEncoder

ENCODER = HashingEncoder(dim=32)


def items(platform: str, names: Sequence[str]) -> list[CatalogItem]:
    return [CatalogItem(item=n, platform=platform, title=n.replace("-", " ")) for n in names]


def ev(i: int, person: str, item: str, platform: str = "shop",
       kind: EventType = EventType.PURCHASE) -> Event:
    return Event(event_id=f"e{i}", type=kind, platform=platform, user=person, ts=float(i),
                 item=item)


def dataset(events: list[Event], catalog_items: list[CatalogItem],
            evaluated: list[bool] | None = None, heldout: list[Event] | None = None) -> Dataset:
    return Dataset("toy", catalog_items, events,
                   evaluated if evaluated is not None else [True] * len(events), heldout or [])


def catalog_for(ds: Dataset) -> Catalog:
    return build_catalog(ds, ENCODER.encode([it.text() for it in ds.items]))


def crafted(kind: EventType = EventType.PURCHASE) -> Dataset:
    """p1..p5 each buy A, then p6..p10 each buy B: popularity's answer is known."""
    names = ["a", "b", *[f"filler-{i}" for i in range(20)]]
    events = [ev(i, f"p{i + 1}", "a" if i < 5 else "b", kind=kind) for i in range(10)]
    return dataset(events, items("shop", names))


def test_targets_are_grouped_by_how_often_their_item_was_seen_before(tmp_path: Path) -> None:
    ds = crafted()  # p1..p5 buy A, then p6..p10 buy B
    ds.heldout = [ev(10, "p1", "b"), ev(11, "p6", "filler-0")]  # after the stream
    cat = catalog_for(ds)
    run = replay(ds, PopularityBaseline(cat), cat, progress=False)
    assert [h.seen for h in run.hits] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert [h.seen for h in run.heldout] == [5, 0]  # B in the whole stream; the filler never
    buckets = run.summary()["by_target_seen"]["prequential"]
    assert list(buckets) == ["0", "1-2", "3-9", "10-29", "30+"]
    # the first A and B were new: popularity cannot return them; then A 1st, B 2nd
    assert buckets["0"] == {"n": 2, "share": 0.2, "returned": 0.0, "hr@10": 0.0, "ndcg@10": 0.0}
    assert buckets["1-2"]["n"] == 4 and buckets["1-2"]["returned"] == 1.0
    assert buckets["1-2"]["ndcg@10"] == pytest.approx((2 + 2 / math.log2(3)) / 4)
    assert buckets["10-29"] == {"n": 0, "share": 0.0}
    result = evaluate(ds, ENCODER, None, vectors=ENCODER.encode([it.text() for it in ds.items]),
                      progress=False, models=("popularity",))
    text = write_report(result, tmp_path / "toy").read_text()
    assert "## By how often the target item was seen before" in text
    assert "| targets | 2 (20%) | 4 (40%) | 4 (40%) | 0 (0%) | 0 (0%) |" in text
    assert "| popularity | 0.0000 (0%) | 0.8155 (100%) | 0.8155 (100%) |  |  |" in text
    assert "| targets | 1 (50%) | 0 (0%) | 1 (50%) | 0 (0%) | 0 (0%) |" in text  # held out
    # where they land: the first A and B never returned, every other one in the top 10
    assert run.summary()["by_rank_band"]["prequential"] == {
        "1-10": 0.8, "11-50": 0.0, "51+": 0.0, "not returned": 0.2
    }
    assert "## Where the targets land" in text
    assert "| popularity | 80.0% | 0.0% | 0.0% | 20.0% |" in text
    assert "| popularity | 50.0% | 0.0% | 0.0% | 50.0% |" in text  # held out: B found, filler not


def test_rank_bands_split_where_the_runs_reranker_stops() -> None:
    """With ``rerank_top=20`` every model's middle band is 11-20, the baselines' and a run
    made elsewhere (the replay through Kafka) too, so the report's table compares like with
    like."""
    ds = crafted()
    served = served_run(ds, {e.event_id: ["shop:a", "shop:b"] for e in ds.events}, 1.0)
    result = evaluate(ds, ENCODER, None, vectors=ENCODER.encode([it.text() for it in ds.items]),
                      config=PipelineConfig(rerank_top=20), models=("popularity", "blend"),
                      progress=False, extra_runs={"blend-kafka": served})
    for name in ("popularity", "blend", "blend-kafka"):
        bands = result["models"][name]["by_rank_band"]["prequential"]
        assert list(bands) == ["1-10", "11-20", "21+", "not returned"]
        assert sum(bands.values()) == pytest.approx(1.0)


def test_learning_before_ranking_would_leak_and_shows() -> None:
    ds = crafted(EventType.VIEW)  # views are not consumed, so a leaked target is not filtered
    cat = catalog_for(ds)
    honest = replay(ds, PopularityBaseline(cat), cat, progress=False)
    leaky = replay(ds, PopularityBaseline(cat), cat, progress=False, learn_first=True)
    assert honest.metrics["all"]["hr@10"] == pytest.approx(0.8)
    assert leaky.metrics["all"]["hr@10"] == 1.0  # the first A and B are found: they leaked


class Spy:
    """Records the order of calls and what each request looked like."""

    name = "spy"

    def __init__(self, answer: Sequence[str] = ()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.requests: list[RankRequest] = []
        self.answer = list(answer)

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        for r in requests:
            self.calls.append(("rank", r.person))
            self.requests.append(r)
        return [list(self.answer) for _ in requests]

    def learn(self, person: str, event: Event, session: SessionState) -> None:
        self.calls.append(("learn", event.event_id))
        if event.item is not None:
            session.consumed.append(f"{event.platform}:{event.item}")


def test_rank_comes_before_learn_and_target_is_never_injected() -> None:
    ds = crafted()
    spy = Spy()
    run = replay(ds, spy, catalog_for(ds), progress=False)
    assert spy.calls[:4] == [("rank", "p1"), ("learn", "e0"), ("rank", "p2"), ("learn", "e1")]
    assert all(r.extra == () for r in spy.requests)
    assert all(h.rank == 0 for h in run.hits)  # not among the candidates: a miss
    assert run.metrics["all"]["hr@10"] == 0.0


def test_only_evaluated_positive_events_are_ranked_and_repeats_skipped() -> None:
    names = ["a", "b", "c"]
    events = [ev(0, "p", "a"), ev(1, "p", "b"), ev(2, "p", "a"),  # repeat purchase of a
              Event(event_id="e3", type=EventType.RATING, platform="shop", user="p", ts=3.0,
                    item="c", value=1.0)]  # a low rating is no target
    ds = dataset(events, items("shop", names), evaluated=[False, True, True, True])
    spy = Spy(["shop:b"])
    run = replay(ds, spy, catalog_for(ds), progress=False)
    assert [c for c in spy.calls if c[0] == "rank"] == [("rank", "p")]
    assert run.repeats_skipped == 1 and [h.rank for h in run.hits] == [1]
    # rank_all: the blend's way: every positive is ranked (feedback), only evaluated ones count
    spy = Spy(["shop:b"])
    run = replay(ds, spy, catalog_for(ds), progress=False, rank_all=True)
    assert [c for c in spy.calls if c[0] == "rank"] == [("rank", "p"), ("rank", "p")]
    assert run.repeats_skipped == 1 and [h.rank for h in run.hits] == [1]


def test_a_repeat_of_an_item_consumed_before_the_last_max_consumed_is_still_a_repeat() -> None:
    n = MAX_CONSUMED + 2
    names = [f"i{k}" for k in range(n)]
    events = [ev(k, "p", names[k]) for k in range(n)]
    # i0 becomes the most popular item, then p buys it again, then something new
    events += [ev(n + k, f"q{k}", "i0") for k in range(3)]
    events += [ev(n + 3, "p", "i0"), ev(n + 4, "p", "new")]
    ds = dataset(events, items("shop", [*names, "new"]), evaluated=[False] * (n + 3) + [True] * 2)
    cat = catalog_for(ds)
    run = replay(ds, PopularityBaseline(cat), cat, progress=False)
    assert run.repeats_skipped == 1 and [h.index for h in run.hits] == [n + 4]
    assert "shop:i0" not in run.top10["shop"]


def test_context_prefers_the_same_platform_and_respects_the_cross_switch() -> None:
    cat_items = items("shop", ["boots", "socks"]) + items("video", ["review"])
    ds = dataset([], cat_items)
    cat = catalog_for(ds)
    for cross in (True, False):
        state = _Replayer(cat, cross_platform=cross)
        state.observed("p", ev(0, "p", "review", "video"))
        first = state.request("p", "shop", 1.0)
        if cross:
            assert first.context is not None
            assert np.allclose(first.context, cat.vector("video:review"))
        else:
            assert first.context is None
        assert state.is_cold("p", "shop") and not state.is_cold("p", "video")
        state.observed("p", ev(1, "p", "boots"))
        state.observed("p", ev(2, "p", "review", "video"))
        second = state.request("p", "shop", 3.0)
        assert second.context is not None
        assert np.allclose(second.context, cat.vector("shop:boots"))
        assert "shop:boots" in second.exclude and second.extra == ()


def test_cold_start_marks_first_five_on_a_second_platform() -> None:
    shop = [f"s{i}" for i in range(8)]
    events = [ev(0, "p", "v0", "video")] + [ev(i + 1, "p", s) for i, s in enumerate(shop)]
    ds = dataset(events, items("video", ["v0"]) + items("shop", shop))
    spy = Spy()
    run = replay(ds, spy, catalog_for(ds), progress=False)
    assert [h.cold for h in run.hits] == [False] + [True] * 5 + [False] * 3
    assert [h.earlier_here for h in run.hits[1:]] == list(range(8))
    assert [h.elsewhere for h in run.hits] == [0] + [1] * 8
    cold = run.summary()["cold_start"]
    assert (cold["first_here"]["n"], cold["later_here"]["n"]) == (1, 4)


def test_cold_start_is_only_on_a_platform_reached_from_another() -> None:
    """B1, A1, B2, B3: B is the person's first platform, so B2 and B3 are no cold start (they
    were counted as such: Amazon alternates the domains, 43 % of its cold targets)."""
    events = [ev(0, "p", "b1", "video"), ev(1, "p", "a1"), ev(2, "p", "b2", "video"),
              ev(3, "p", "b3", "video"), ev(4, "p", "a2")]
    ds = dataset(events, items("video", ["b1", "b2", "b3"]) + items("shop", ["a1", "a2"]))
    run = replay(ds, Spy(), catalog_for(ds), progress=False)
    assert [(h.platform, h.cold) for h in run.hits] == [
        ("video", False), ("shop", True), ("video", False), ("video", False), ("shop", True)
    ]


def test_what_no_model_may_return_is_skipped_not_scored_as_a_miss() -> None:
    """A viewed item bought next is excluded from the list made for that view; a held-out item
    bought before is excluded from every list. Both were misses for every model."""
    names = ["a", "b", "c"]
    events = [ev(0, "p", "a", kind=EventType.VIEW), ev(1, "p", "a"), ev(2, "p", "b")]
    held = [ev(9, "p", "a"), ev(9, "p", "c")]
    ds = dataset(events, items("shop", names), heldout=held)
    run = replay(ds, Spy(["shop:c", "shop:b"]), catalog_for(ds), progress=False)
    assert run.repeats_skipped == 1 and [h.rank for h in run.hits] == [0, 2]
    assert run.heldout_repeats_skipped == 1 and [h.rank for h in run.heldout] == [1]


def two_platform_world() -> Dataset:
    """People like one theme; each theme has items on both platforms with shared words."""
    themes = {"jazz": "saxophone bebop swing", "garden": "tomato compost soil",
              "run": "trail marathon shoes", "space": "rocket galaxy telescope"}
    cat: list[CatalogItem] = []
    for theme, words in themes.items():
        for platform in ("shop", "video"):
            cat += [CatalogItem(item=f"{theme}-{i}", platform=platform,
                                title=f"{words} {theme} number{i}") for i in range(6)]
    events: list[Event] = []
    for step in range(8):
        for person in range(24):
            theme = list(themes)[person % 4]
            platform = "video" if step < 4 else "shop"
            item = f"{theme}-{(step + person) % 6}"
            events.append(Event(event_id=f"e{len(events)}", type=EventType.CONSUME,
                                platform=platform, user=f"p{person}", ts=float(len(events)),
                                item=item))
    held = [Event(event_id=f"h{p}", type=EventType.PURCHASE, platform="shop", user=f"p{p}",
                  ts=1e4, item=f"{list(themes)[p % 4]}-{(p + 9) % 6}") for p in range(24)]
    return dataset(events, cat, heldout=held)


def test_evaluate_runs_every_model_and_writes_the_report(tmp_path: Path) -> None:
    ds = two_platform_world()
    vectors = ENCODER.encode([it.text() for it in ds.items])
    result = evaluate(ds, ENCODER, None, vectors=vectors, progress=False)
    models = result["models"]
    assert set(models) == {"popularity", "covisit", "covisit-consumed", "cross-history",
                           "item-knn", "person-knn", "ease", "river-mf", "content", "blend",
                           "blend-no-cross"}
    for m in models.values():
        assert m["prequential"]["all"]["n"] == len(ds.events)  # no repeats here
        assert set(m["leave_last_out"]) == {"shop", "all"}
        for section in ("prequential", "leave_last_out"):
            low, high = m["ndcg@10_95ci"][section]
            assert low - 1e-9 <= m[section]["all"]["ndcg@10"] <= high + 1e-9
    # text similarity finds the theme: far better than chance (1 theme in 4)
    assert models["content"]["prequential"]["all"]["hr@10"] > 0.5
    assert models["blend"]["cold_start"]["n"] == 24 * 4
    weights = [p for p in models["blend"]["series"] if "weights" in p]
    assert weights and set(weights[-1]["weights"]) == {"shop", "video"}
    checks = result["checks"]
    assert checks["cold_start"]["n"] == 96
    assert {"blend_vs_best_baseline", "events_per_s", "leave_last_out_ndcg@10"} <= set(checks)
    low, high = checks["blend_vs_best_baseline"]["lift_95ci"]
    assert low <= checks["blend_vs_best_baseline"]["lift"] <= high
    assert 0.0 < models["blend"]["returned"] <= 1.0
    places = checks["cold_start"]["by_position"]
    assert [(p["position"], p["n"]) for p in places] == [(1, 24), (2, 24), (3, 24), (4, 24)]
    assert all(p["elsewhere_mean"] >= 1 for p in places)
    alone = checks["cold_start"]["first_here_other_platforms_alone"]
    assert alone["n"] == 24
    assert alone["hr@10_cross_history"] == models["cross-history"]["cold_start"]["first_here"][
        "hr@10"
    ]
    # everyone's video theme carries over to the shop: more than popularity knows
    assert alone["hr@10_cross_history"] > 2 * alone["hr@10_popularity"]
    md = write_report(result, tmp_path / "toy")
    assert md.read_text().startswith("# Replay evaluation: toy")
    assert "on other platforms' history alone (24): cross-history" in md.read_text()
    low, high = checks["leave_last_out_ndcg@10_95ci"]["shop"]
    assert low - 1e-9 <= checks["leave_last_out_ndcg@10"]["shop"] <= high + 1e-9
    assert f"shop {checks['leave_last_out_ndcg@10']['shop']:.4f} ({low:.4f}-{high:.4f})" in (
        md.read_text()
    )
    assert json.loads((tmp_path / "toy" / "results.json").read_text())["dataset"] == "toy"
    pytest.importorskip("matplotlib")
    assert (tmp_path / "toy" / "hr_along_stream.png").stat().st_size > 1000
    assert (tmp_path / "toy" / "blend_weights.png").stat().st_size > 1000
    assert (tmp_path / "toy" / "models_compared.png").stat().st_size > 1000
    assert (tmp_path / "toy" / "cold_start.png").stat().st_size > 1000
    assert (tmp_path / "toy" / "rank_bands.png").stat().st_size > 1000
    assert "![models_compared.png](models_compared.png)" in md.read_text()
    assert "![rank_bands.png](rank_bands.png)" in md.read_text()
    assert "| 1 | 24 |" in md.read_text()  # the cold-start table's first place
    # what each baseline ranks in its top 10 that the blend does not, from the stored ranks
    against = checks["blend_against_baselines"]
    assert set(against) == {"prequential", "leave_last_out"}
    assert set(against["prequential"]) == set(models) - {"blend", "blend-no-cross"}
    for section, per_baseline in against.items():
        mine = result["targets"]["blend"][section].rank
        for name, found in per_baseline.items():
            theirs = result["targets"][name][section].rank
            top = (theirs > 0) & (theirs <= 10)
            assert found["top10"] == int(top.sum())
            assert found["top10_not_returned_by_blend"] == int((top & (mine == 0)).sum())
            assert found["top10_blend_below_10"] == int((top & (mine > 10)).sum())
            gains = [
                np.where((r > 0) & (r <= 10), 1 / np.log2(np.maximum(r, 1) + 1.0), 0.0)
                for r in (mine, theirs)
            ]
            assert found["best_of_two_ndcg@10"] == pytest.approx(np.maximum(*gains).mean())
            assert found["best_of_two_ndcg@10"] >= found["blend_ndcg@10"]
    assert "## What the baselines find that the blend does not" in md.read_text()
    content = against["leave_last_out"]["content"]
    assert (
        f"| content | {content['top10']:,} | {content['top10_not_returned_by_blend']:,} | "
        in md.read_text()
    )


def test_the_report_says_when_the_reranker_was_fitted(tmp_path: Path) -> None:
    ds = two_platform_world()
    vectors = ENCODER.encode([it.text() for it in ds.items])
    result = evaluate(ds, ENCODER, None, vectors=vectors, progress=False, models=("blend",),
                      config=PipelineConfig(rerank_every=20))
    rr = result["models"]["blend"]["reranker"]
    assert rr["answered_lists"] >= 40
    assert rr["fitted_at"] == [20 * (i + 1) for i in range(rr["answered_lists"] // 20)]
    text = write_report(result, tmp_path / "toy").read_text()
    assert f"learned from {rr['answered_lists']:,} answered lists" in text
    assert "fitted after 20, 40" in text
    result = evaluate(ds, ENCODER, None, vectors=vectors, progress=False, models=("blend",),
                      config=PipelineConfig(rerank_every=10**6))
    text = write_report(result, tmp_path / "never").read_text()
    assert "and was never fitted (too few): the blend's order was served." in text


def test_cross_platform_history_helps_cold_start_in_a_world_where_it_should() -> None:
    ds = two_platform_world()
    vectors = ENCODER.encode([it.text() for it in ds.items])
    result = evaluate(ds, ENCODER, None, vectors=vectors, progress=False,
                      models=("blend", "blend-no-cross"))
    cold = result["checks"]["cold_start"]
    assert cold["hr@10_with_history"] > cold["hr@10_without"]
    # the first positive on the new platform is where other platforms' history matters most
    first = cold["first_here"]
    assert first["n"] == 24 and first["hr@10_with_history"] > first["hr@10_without"]
    low, high = cold["lift_95ci"]
    assert low <= cold["lift"] <= high


class _NoProbe:
    """A blend that cannot rank quietly: the replay makes no second ranking."""

    def __init__(self, blend: BlendRecommender) -> None:
        self.name, self.config = blend.name, blend.config
        self.rank, self.learn, self.before_learn = blend.rank, blend.learn, blend.before_learn


def test_the_same_blend_ranks_cold_start_targets_again_without_the_persons_other_platforms(
    tmp_path: Path,
) -> None:
    ds = two_platform_world()
    vectors = ENCODER.encode([it.text() for it in ds.items])
    cat = build_catalog(ds, vectors)
    runs = []
    for wrap in (lambda b: b, _NoProbe):
        pipeline = Pipeline(ENCODER, None, PipelineConfig(rerank_every=20), cat)
        pipeline.index_texts(ds.items)
        runs.append(replay(ds, wrap(BlendRecommender(pipeline)), cat, progress=False,
                           batch_size=16, rank_all=True))
    probed, plain = runs
    # ranking again changes nothing the blend learns: every target ranked as without it
    assert [(h.index, h.rank) for h in probed.hits] == [(h.index, h.rank) for h in plain.hits]
    assert plain.alone == [] and [h.index for h in probed.alone] == [
        h.index for h in probed.hits if h.cold
    ]
    # everyone's video theme carries over to the shop: hiding it costs the first shop positive
    with_it = [h for h in probed.hits if h.cold and h.earlier_here == 0]
    alone = [h for h in probed.alone if h.earlier_here == 0]
    assert len(alone) == 24 and hit_rate(with_it) > hit_rate(alone)
    result = evaluate(ds, ENCODER, None, vectors=vectors, progress=False, models=("blend",))
    same = result["checks"]["cold_start_same_model"]
    assert same["n"] == 96 and same["first_here"]["n"] == 24
    assert "cold_start" not in result["checks"]  # that one needs blend-no-cross
    assert len(result["targets"]["blend"]["cold_start_alone"].rank) == 96  # for compare
    text = write_report(result, tmp_path / "toy").read_text()
    assert "only the person's own history on their other platforms hidden" in text
    probe_s = result["models"]["blend"]["cold_start_probe_seconds"]
    assert probe_s >= 0 and f"took {probe_s} s, left out of its speed" in text
    pytest.importorskip("matplotlib")
    assert (tmp_path / "toy" / "cold_start.png").stat().st_size > 1000  # without blend-no-cross

def test_one_platform_skips_the_cross_platform_comparisons() -> None:
    two = two_platform_world()
    assert {"cross-history", "blend-no-cross"} <= set(default_models(two))
    shop_only = [e for e in two.events if e.platform == "shop"]
    one = dataset(shop_only, [it for it in two.items if it.platform == "shop"])
    models = default_models(one)
    assert "blend" in models and "popularity" in models
    assert not {"cross-history", "blend-no-cross"} & set(models)


def test_embeddings_are_cached_on_disk(tmp_path: Path) -> None:
    ds = two_platform_world()

    class Counting(HashingEncoder):
        calls = 0

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            Counting.calls += 1
            return super().encode(texts)

    enc = Counting(dim=16)
    cache = tmp_path / ".cache" / "embeddings"
    first = embed_items(ds, enc, cache, progress=False)
    second = embed_items(ds, enc, cache, progress=False)
    assert Counting.calls == 1 and np.array_equal(first, second)
    assert len(list(cache.glob("hashing-test-*.npy"))) == 1
    assert (tmp_path / ".cache" / ".gitignore").read_text() == "*\n"


def test_report_of_a_stream_without_targets(tmp_path: Path) -> None:
    """A --limit that ends before the first evaluated event: the blend ranked (for feedback)
    but recorded nothing; and a stream with no positive at all: it never ranked."""
    world = two_platform_world()
    ds = dataset(world.events[:20], world.items, evaluated=[False] * 20)
    vectors = ENCODER.encode([it.text() for it in ds.items])
    result = evaluate(ds, ENCODER, None, vectors=vectors, progress=False, models=("blend",))
    blend = result["models"]["blend"]
    assert blend["prequential"].get("all", {}).get("n", 0) == 0
    assert not [p for p in blend["series"] if "hr@10" in p] and blend["series"][-1]["weights"]
    md = write_report(result, tmp_path / "toy")
    assert md.read_text().startswith("# Replay evaluation: toy")
    low = [e.model_copy(update={"type": EventType.RATING, "value": 1.0}) for e in ds.events]
    result = evaluate(dataset(low, ds.items, evaluated=[True] * 20), ENCODER, None,
                      vectors=vectors, progress=False, models=("blend",))
    assert result["models"]["blend"]["series"][-1]["weights"] == {}
    assert write_report(result, tmp_path / "none").read_text().startswith("# Replay")


def test_main_says_clearly_when_data_are_missing(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--dataset", "movielens", "--data", str(tmp_path / "absent"), "--out",
                 str(tmp_path / "reports"), "--no-progress"])
    assert code == 2
    assert "MovieLens data not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "-35"], "--limit must be >= 1"),
        (["--models", ","], "--models names no model"),
        (["--models", "blend,bogus"], "unknown models ['bogus']"),
        (["--out", "FILE"], "--out FILE is a file, not a folder"),
        (["--cache", "FILE"], "--cache FILE is a file, not a folder"),
        (["--sequence-artifacts", "nowhere"], "--sequence-artifacts nowhere is not a folder"),
    ],
)
def test_main_refuses_bad_arguments_before_loading_anything(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The data folder does not exist: an argument error must come first (before, --out
    pointing at a file failed with a traceback after the whole replay)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("")
    with pytest.raises(SystemExit):
        main(["--dataset", "movielens", "--data", str(tmp_path / "absent"), *args])
    assert message in capsys.readouterr().err


def toy_generic(tmp_path: Path) -> Path:
    """A generic dataset folder: 20 items on two platforms, 120 purchases by 6 people."""
    rng = np.random.default_rng(3)
    words = ["red", "blue", "wool", "silk", "lamp", "desk", "pen", "ink"]
    items = [(f"i{i}", "shop" if i < 10 else "office") for i in range(20)]
    data = tmp_path / "toy"
    data.mkdir()
    (data / "items.csv").write_text(
        "item,platform,text\n"
        + "".join(f"{i},{p},{' '.join(rng.choice(words, 3))} {i}\n" for i, p in items)
    )
    rows = []
    for t in range(120):
        item, platform = items[int(rng.integers(20))]
        rows.append(f"{t},{platform},p{int(rng.integers(6))},{item},purchase,\n")
    (data / "events.csv").write_text("time,platform,person,item,type,value\n" + "".join(rows))
    return data


def test_models_replayed_in_parallel_processes_give_what_one_process_gives(
    serving_artifacts: Path, sequence_artifacts: Path, tmp_path: Path
) -> None:
    """``--jobs 2`` replays the models in two worker processes that load the inputs
    themselves (the sequence model too); every model's results must be those of the
    one-process run."""
    data = toy_generic(tmp_path)
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        code = main(["--dataset", "generic", "--data", str(data), "--out", str(out),
                     "--artifacts", str(serving_artifacts), "--cache", str(tmp_path / "cache"),
                     "--models", "popularity,covisit,blend", "--jobs", str(jobs),
                     "--sequence-artifacts", str(sequence_artifacts), "--no-progress"])
        assert code == 0
        results[jobs] = json.loads((out / "toy" / "results.json").read_text())
    assert results[1]["jobs"] == 1 and results[2]["jobs"] == 2
    sequence = read_spec(sequence_artifacts, "sequence")["version"]
    assert results[1]["sequence"] == results[2]["sequence"] == sequence
    assert list(results[2]["models"]) == ["popularity", "covisit", "blend"]  # as asked
    for name, one in results[1]["models"].items():
        two = results[2]["models"][name]
        assert one["prequential"]["all"]["n"] > 50
        assert two["prequential"] == one["prequential"]
        assert two["series"] == one["series"]


def test_set_changes_pipeline_settings_in_every_process_and_the_report_says_so(
    serving_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = toy_generic(tmp_path)
    common = ["--dataset", "generic", "--data", str(data), "--artifacts", str(serving_artifacts),
              "--cache", str(tmp_path / "cache"), "--no-sequence", "--no-progress"]
    results = {}
    for name, extra in {
        "default": ["--jobs", "1"],
        "top3": ["--jobs", "2", "--set", "top_k=3", "--set", "rerank_every=none"],
    }.items():
        out = tmp_path / name
        code = main([*common, "--out", str(out), "--models", "popularity,blend", *extra])
        assert code == 0
        results[name] = json.loads((out / "toy" / "results.json").read_text())
    assert results["default"]["pipeline_settings_changed"] == {}
    assert results["top3"]["pipeline_settings_changed"] == {"top_k": 3, "rerank_every": None}
    assert any("top_k=3, rerank_every=None" in n for n in results["top3"]["notes"])
    # the blend's worker process replayed with them: no reranker
    assert "reranker" in results["default"]["models"]["blend"]
    assert "reranker" not in results["top3"]["models"]["blend"]
    capsys.readouterr()
    code = main([*common, "--out", str(tmp_path / "bad"), "--set", "rerank_topp=9"])
    assert code == 2
    assert "unknown pipeline setting 'rerank_topp'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--out", str(tmp_path / "bad"), "--set", "cross_platform=false"])
    assert "run blend-no-cross" in capsys.readouterr().err
