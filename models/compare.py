"""Two replays compared target by target: did a change move the figures, or only the noise?

A replay ranks the same targets in the same order every time, so two runs of ``streamrec
evaluate`` over one dataset (two revisions, two ``--set`` values, two heads) can be paired:
each target's gain under one against its gain under the other. ``targets.npz``, written beside
each report, keeps every model's ranks; :func:`compare` gives each figure in both runs, the
relative change and its 95 % paired bootstrap interval (people resampled, their targets in
both runs together), so a difference of a few per cent on a few hundred held-out items is not
taken for a gain.

``streamrec compare RUN_A RUN_B`` prints it (``--out`` writes it as markdown too, and a
plot of the changes and their intervals beside it); RUN_B's
model is compared with RUN_A's (``--model``; ``--model-b`` another, e.g. ``blend-no-cross`` of
the same run).

Examples
--------
>>> a = Targets.of([Hit(i, "shop", 1 if i % 4 == 0 else 0) for i in range(400)])
>>> b = Targets.of([Hit(i, "shop", 1 if i % 2 == 0 else 0) for i in range(400)])
>>> row = compare_targets({"blend": {"prequential": a}}, {"blend": {"prequential": b}},
...                       "blend", "blend")[0]
>>> row.measure, row.a, row.b, row.change, row.low > 0.5
('stream NDCG@10, all', 0.25, 0.5, 1.0, True)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ComparisonError, StreamrecError
from models.metrics import Hit, cold_parts, hit_rate, ndcg, paired_lift

#: Written by :func:`save_targets` beside ``results.json``.
TARGETS_FILE = "targets.npz"
SECTIONS = ("prequential", "leave_last_out")
#: The cold-start targets ranked again by the same model without the person's history on
#: other platforms (:func:`models.evaluation.replay`'s probe); only models that can probe
ALONE = "cold_start_alone"


@dataclass(frozen=True)
class Targets:
    """One model's targets of one section of a replay, in the order ranked."""

    index: np.ndarray  # position of the event in the stream (-1: held out after it)
    platform: np.ndarray  # str
    rank: np.ndarray  # 1-based; 0: not among the returned items
    cold: np.ndarray  # bool: among the person's first positives on the platform
    earlier_here: np.ndarray  # the person's positives on this platform before this one
    person: np.ndarray  # str: whose target (the bootstrap's unit; "" in files from before it)

    @classmethod
    def of(cls, hits: Sequence[Hit]) -> Targets:
        return cls(
            np.array([h.index for h in hits], np.int64),
            np.array([h.platform for h in hits], np.str_),
            np.array([h.rank for h in hits], np.int32),
            np.array([h.cold for h in hits], np.bool_),
            np.array([h.earlier_here for h in hits], np.int32),
            np.array([h.person for h in hits], np.str_),
        )

    def hits(self) -> list[Hit]:
        """As :class:`Hit` objects numbered by their place here, so two runs' pair up
        (held-out targets all have index -1)."""
        return [
            Hit(i, p, r, c, e, person=who)
            for i, (p, r, c, e, who) in enumerate(
                zip(
                    self.platform.tolist(),
                    self.rank.tolist(),
                    self.cold.tolist(),
                    self.earlier_here.tolist(),
                    self.person.tolist(),
                    strict=True,
                )
            )
        ]

    def same_targets(self, other: Targets) -> bool:
        """The same targets in the same order: stream position and platform, and whose they
        are where both files say (leave-last-out targets all have position -1)."""
        named = (self.person != "").all() and (other.person != "").all()
        return (
            np.array_equal(self.index, other.index)
            and np.array_equal(self.platform, other.platform)
            and (not named or np.array_equal(self.person, other.person))
        )


def save_targets(targets: Mapping[str, Mapping[str, Targets]], out: Path) -> Path:
    """``{model: {section: Targets}}`` in one ``.npz`` under ``out``."""
    arrays: dict[str, np.ndarray] = {}
    for model, sections in targets.items():
        for section, found in sections.items():
            for name, values in vars(found).items():
                arrays[f"{model}/{section}/{name}"] = values
    path = out / TARGETS_FILE
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path


def report_folder(run: Path) -> Path:
    """The report folder ``run`` names: itself, or the one dataset folder under an
    ``evaluate --out`` folder (``runs/base`` for ``runs/base/amazon``)."""
    if run.is_dir() and not (run / TARGETS_FILE).exists():
        inside = [d for d in run.iterdir() if (d / TARGETS_FILE).is_file()]
        if len(inside) == 1:
            return inside[0]
    return run


def load_targets(run: Path) -> dict[str, dict[str, Targets]]:
    """``{model: {section: Targets}}`` from a report folder (or its ``targets.npz``)."""
    run = report_folder(run)
    path = run / TARGETS_FILE if run.is_dir() else run
    if not path.is_file():
        raise ComparisonError(
            f"{path} not found: compare report folders written by `streamrec evaluate` "
            "(reports from before it kept each target's rank have none)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            fields: dict[tuple[str, str], dict[str, np.ndarray]] = {}
            for key in data.files:
                model, section, name = key.split("/")
                fields.setdefault((model, section), {})[name] = data[key]
    except (OSError, ValueError, KeyError) as e:
        raise ComparisonError(f"{path} is not a targets file: {e}") from e
    out: dict[str, dict[str, Targets]] = {}
    for (model, section), values in fields.items():
        # files written before targets named their person: resampled by target
        values.setdefault("person", np.full(len(values.get("rank", ())), "", np.str_))
        out.setdefault(model, {})[section] = Targets(**values)
    return out


@dataclass(frozen=True)
class Row:
    """One figure in both runs: B's relative change over A with its 95 % paired interval."""

    measure: str
    n: int
    a: float
    b: float
    change: float | None  # b / a - 1
    low: float | None
    high: float | None
    # the same figure's change in each rerun of A with another seed (``--rerun``): how far
    # the learners' own path moves it
    reruns: tuple[float, ...] = ()

    @property
    def rerun(self) -> float | None:
        """The reruns' largest change (either way), or None without a rerun."""
        return max(self.reruns, key=abs) if self.reruns else None

    @property
    def verdict(self) -> str:
        if self.low is None or self.high is None or self.change is None:
            return ""
        if self.low > 0 or self.high < 0:
            if self.rerun is not None and abs(self.change) <= abs(self.rerun):
                several = len(self.reruns) > 1
                return "within the reruns' changes" if several else "within the rerun's change"
            return "higher" if self.low > 0 else "lower"
        return "within the noise"


def with_rerun(rows: Sequence[Row], *reruns: Sequence[Row]) -> list[Row]:
    """``rows`` with each figure's change in every rerun (A against A rerun with another seed;
    a figure a rerun lacks gets none from it)."""
    changes: dict[str, list[float]] = {}
    for rerun in reruns:
        for r in rerun:
            if r.change is not None:
                changes.setdefault(r.measure, []).append(r.change)
    return [dataclasses.replace(r, reruns=tuple(changes.get(r.measure, ()))) for r in rows]


def _row(measure: str, a: Sequence[Hit], b: Sequence[Hit], metric: str) -> Row:
    value = ndcg if metric == "ndcg@10" else hit_rate
    lift = paired_lift(b, a, metric)
    return Row(measure, len(a), value(a), value(b), lift["lift"], lift["low"], lift["high"])


def compare_targets(
    a: Mapping[str, Mapping[str, Targets]],
    b: Mapping[str, Mapping[str, Targets]],
    model_a: str,
    model_b: str,
) -> list[Row]:
    """Rows for ``model_b`` of run ``b`` against ``model_a`` of run ``a`` (``{model: {section:
    Targets}}``, as :func:`load_targets` gives them): stream NDCG@10 per platform and over
    all, stream HR@10, leave-last-out NDCG@10 per platform and over all (if any), the cold
    start's HR@10 and its first positives'."""
    for run, model, which in ((a, model_a, "A"), (b, model_b, "B")):
        if model not in run:
            raise ComparisonError(f"run {which} has no model {model!r} (it has {sorted(run)})")
    sections = (a[model_a], b[model_b])
    rows: list[Row] = []
    for section in SECTIONS:
        ta, tb = sections[0].get(section), sections[1].get(section)
        if (ta is None or not len(ta.rank)) and (tb is None or not len(tb.rank)):
            continue
        if ta is None or tb is None:
            raise ComparisonError(
                f"only run {'A' if tb is None else 'B'} has {section} targets: compare replays "
                "of one dataset, split and --limit"
            )
        if not ta.same_targets(tb):
            raise ComparisonError(
                f"the runs did not rank the same {section} targets ({len(ta.rank):,} vs "
                f"{len(tb.rank):,}): compare replays of one dataset, split and --limit"
            )
        ha, hb = ta.hits(), tb.hits()
        name = "stream" if section == "prequential" else "leave-last-out"
        platforms = sorted(set(ta.platform.tolist()))
        for platform in [*platforms, "all"] if len(platforms) > 1 else ["all"]:
            pick = [i for i, h in enumerate(ha) if platform == "all" or h.platform == platform]
            a_hits, b_hits = [ha[i] for i in pick], [hb[i] for i in pick]
            rows.append(_row(f"{name} NDCG@10, {platform}", a_hits, b_hits, "ndcg@10"))
        if section == "prequential":
            rows.append(_row("stream HR@10, all", ha, hb, "hr@10"))
            cold_a = [h for h in ha if h.cold]
            cold_b = [h for h in hb if h.cold]
            if cold_a:
                rows.append(
                    _row("cold start HR@10 (first positives here)", cold_a, cold_b, "hr@10")
                )
                first_a, first_b = (
                    cold_parts(cold_a)["first_here"],
                    cold_parts(cold_b)["first_here"],
                )
                rows.append(
                    _row("cold start HR@10, very first positive", first_a, first_b, "hr@10")
                )
    alone_a, alone_b = sections[0].get(ALONE), sections[1].get(ALONE)
    if alone_a is not None and alone_b is not None and alone_a.same_targets(alone_b):
        rows.append(
            _row(
                "cold start HR@10, own history elsewhere hidden",
                alone_a.hits(),
                alone_b.hits(),
                "hr@10",
            )
        )
    return rows


def _what_differs(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The settings of the two runs' ``results.json`` that differ."""
    lines = []
    for key in ("dataset", "events", "batch_size", "encoder", "ranker", "sequence"):
        if a.get(key) != b.get(key):
            lines.append(f"{key}: {a.get(key)} → {b.get(key)}")
    sa, sb = a.get("pipeline_settings_changed", {}), b.get("pipeline_settings_changed", {})
    for key in sorted(sa.keys() | sb.keys()):
        if sa.get(key) != sb.get(key):
            lines.append(f"{key}: {sa.get(key, 'default')} → {sb.get(key, 'default')}")
    return lines


def markdown(rows: Sequence[Row], title: str, differs: Sequence[str]) -> str:
    def pct(x: float | None) -> str:
        return "" if x is None else f"{100 * x:+.1f} %"

    lines = [f"# {title}", ""]
    if differs:
        lines += ["What differs between the runs (from their results.json):", ""]
        lines += [f"- {d}" for d in differs] + [""]
    reruns = any(r.reruns for r in rows)
    several = any(len(r.reruns) > 1 for r in rows)
    rerun_head = (" A's reruns over A |" if several else " A rerun over A |") if reruns else ""
    lines += [
        f"| measure | targets | A | B | B over A | 95 % paired interval |{rerun_head} |",
        "|---|---:|---:|---:|---:|---|" + ("---:|" if reruns else "") + "---|",
    ]
    for r in rows:
        interval = "" if r.low is None else f"{pct(r.low)} … {pct(r.high)}"
        rerun = f" {' / '.join(pct(c) for c in r.reruns)} |" if reruns else ""
        lines.append(
            f"| {r.measure} | {r.n:,} | {r.a:.4f} | {r.b:.4f} | {pct(r.change)} | {interval} "
            f"|{rerun} {r.verdict} |"
        )
    lines += [
        "",
        "The interval is a paired bootstrap over the people (1,000 resamples; over the "
        "targets for runs written before targets named their person): how far the change "
        "could move with another draw of as many people. Where it spans 0 the runs "
        "do not differ measurably on these targets. Several rows are read at once, so one in "
        "twenty may miss by chance. It does not cover the learners' own path: any change "
        "(another seed too) sends the blend's and the reranker's updates another way, which "
        "on Amazon's few hundred held-out items alone moved figures by 3-4 %. "
        + (
            "The rerun column is that: A again with another seed; a change no larger than "
            "the rerun's (with several, the largest of theirs) is not counted."
            if reruns
            else "Give `--rerun` (A again with `--set seed=...`) to see it beside the change."
        ),
        "",
    ]
    return "\n".join(lines)


def plot(rows: Sequence[Row], title: str, path: Path) -> bool:
    """Each row's change with its interval, one line each (a forest plot); False without
    matplotlib (the ``eval`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [r for r in rows if r.change is not None and r.low is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.4))
    colours = {"higher": "tab:green", "lower": "tab:red"}
    labelled = False
    for y, r in enumerate(reversed(shown)):
        assert r.change is not None and r.low is not None and r.high is not None
        colour = colours.get(r.verdict, "tab:grey")
        ax.plot([100 * r.low, 100 * r.high], [y, y], color=colour, lw=2.5, alpha=0.7)
        ax.plot([100 * r.change], [y], "o", color=colour)
        for change in r.reruns:
            label = None if labelled else "A rerun"
            labelled = True
            ax.plot([100 * change], [y], "x", color="black", label=label)
    ax.axvline(0, color="black", lw=0.8)
    if any(r.reruns for r in shown):
        ax.legend(loc="best", fontsize=8)
    ax.set_yticks(range(len(shown)), [f"{r.measure} ({r.n:,})" for r in reversed(shown)])
    ax.set_xlabel("B over A, % (95 % paired bootstrap interval)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _results(run: Path) -> dict[str, Any]:
    run = report_folder(run)
    path = (run if run.is_dir() else run.parent) / "results.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamrec compare",
        description="Compare two replays (report folders of `streamrec evaluate`) target by "
        "target, with paired bootstrap intervals.",
    )
    parser.add_argument("run_a", type=Path, help="the baseline run's report folder")
    parser.add_argument("run_b", type=Path, help="the other run's report folder")
    parser.add_argument("--model", default="blend", help="the model compared (default blend)")
    parser.add_argument("--model-b", default=None, help="run B's model, if another")
    parser.add_argument(
        "--rerun",
        type=Path,
        action="append",
        default=[],
        help="run A again with another seed (`--set seed=8`): each figure's change there, "
        "the learners' own noise, is shown beside B's; repeat it for several seeds",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the markdown here, and its plot beside it (.png)",
    )
    args = parser.parse_args(argv)
    model_b = args.model_b or args.model
    try:
        targets_a = load_targets(args.run_a)
        rows = compare_targets(targets_a, load_targets(args.run_b), args.model, model_b)
        agains = [
            compare_targets(targets_a, load_targets(rerun), args.model, args.model)
            for rerun in args.rerun
        ]
        rows = with_rerun(rows, *agains)
    except StreamrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    title = f"{args.run_b} ({model_b}) against {args.run_a} ({args.model})"
    text = markdown(rows, title, _what_differs(_results(args.run_a), _results(args.run_b)))
    print(text)
    if args.out is not None:
        args.out.write_text(text)
        png = args.out.with_suffix(".png")
        if plot(rows, title, png):
            print(f"plot: {png}")
    return 0
