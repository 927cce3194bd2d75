"""The evaluation report: ``results.json``, ``report.md`` and PNG plots in one folder.

matplotlib is imported only when plotting (the ``eval`` extra); without it the report is
written without plots and says so.

Examples
--------
>>> result = {"dataset": "toy", "notes": [], "platforms": ["shop"], "catalog_sizes": {"shop": 3},
...           "events": 2, "evaluated_events": 2, "heldout": 0, "encoder": "e", "ranker": None,
...           "checks": {}, "models": {"popularity": {
...               "model": "popularity", "events": 2, "seconds": 0.1, "events_per_s": 20.0,
...               "repeats_skipped": 0, "cold_start": {"n": 0, "hr@10": 0.0}, "series": [],
...               "leave_last_out": {},
...               "prequential": {"all": {"n": 2, "hr@10": 0.5, "ndcg@10": 0.5, "mrr": 0.5,
...                                        "coverage": 0.33}}}}}
>>> print(markdown(result).splitlines()[0])
# Replay evaluation: toy
>>> result["models"]["blend-kafka"] = {**result["models"]["popularity"], "model": "blend-kafka"}
>>> note = [line for line in markdown(result).splitlines() if line.startswith("blend-kafka")]
>>> "its MRR is MRR@top_k" in note[0]
True
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from models.compare import save_targets

METRICS = ("hr@10", "ndcg@10", "mrr", "coverage")


def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{100 * v:+.1f}%" if pct else f"{v:.4f}"
    return str(v)


def _ci(check: dict[str, Any]) -> str:
    low, high = (check.get("lift_95ci") or [None, None])[:2]
    if low is None or high is None:
        return ""
    return f" (95% paired bootstrap interval {100 * low:+.1f}% to {100 * high:+.1f}%)"


def _table(models: dict[str, Any], section: str, platforms: list[str]) -> list[str]:
    lines = [
        "| model | platform | n | HR@10 | NDCG@10 | MRR | coverage |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in models.items():
        rows = m.get(section) or {}
        for p in [*platforms, "all"]:
            r = rows.get(p)
            if r is None:
                continue
            lines.append(
                f"| {name} | {p} | {r['n']} | "
                + " | ".join(_f(r.get(k)) if k in r else "" for k in METRICS)
                + " |"
            )
    return lines


def _per_section(models: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
    """(title, model → its ``key`` breakdown) for the prequential replay and the
    leave-last-out, models without one left out, sections without any skipped."""
    out = []
    for section, title in (("prequential", "prequential"), ("leave_last_out", "leave-last-out")):
        per_model = {name: m.get(key, {}).get(section) or {} for name, m in models.items()}
        per_model = {name: b for name, b in per_model.items() if b}
        if per_model:
            out.append((title, per_model))
    return out


def _long_tail(models: dict[str, Any]) -> list[str]:
    """Per model, NDCG@10 of the targets by how often their item was a positive before."""
    out: list[str] = []
    for title, per_model in _per_section(models, "by_target_seen"):
        if not out:
            out += [
                "",
                "## By how often the target item was seen before",
                "",
                "Targets grouped by their item's positives in the stream before it was ranked "
                "(leave-last-out: in the whole stream). Each cell: NDCG@10 (share of those "
                "targets returned at all: for the blend, its candidate recall).",
            ]
        counts = next(iter(per_model.values()))  # every model ranked the same targets
        labels = list(counts)
        out += [
            "",
            f"{title}:",
            "",
            "| model | " + " | ".join(f"seen {label}" for label in labels) + " |",
            "|---|" + "---:|" * len(labels),
            "| targets | "
            + " | ".join(f"{counts[lb]['n']} ({counts[lb]['share']:.0%})" for lb in labels)
            + " |",
        ]
        for name, buckets in per_model.items():
            cells = [
                f"{_f(buckets[lb]['ndcg@10'])} ({buckets[lb]['returned']:.0%})"
                if buckets.get(lb, {}).get("n")
                else ""
                for lb in labels
            ]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def _against_baselines(sections: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Per section, what each baseline ranks in its top 10 that the blend does not."""
    out: list[str] = []
    for section, per_baseline in sections.items():
        if not out:
            out += [
                "",
                "## What the baselines find that the blend does not",
                "",
                "Targets a baseline ranks in its top 10: how many, how many of them the blend "
                "never returns (not among its candidates) and how many it ranks below its 10th. "
                "Best of two: NDCG@10 if each target took the better of the blend's and the "
                "baseline's ranks, a bound no fusion of the two reaches.",
            ]
        blend = next(iter(per_baseline.values()))["blend_ndcg@10"]
        out += [
            "",
            f"{section.replace('_', '-')} (blend NDCG@10 {_f(blend)}):",
            "",
            "| baseline | its top 10 | not returned by the blend | below the blend's 10th "
            "| best of two NDCG@10 |",
            "|---|---:|---:|---:|---:|",
        ]
        out += [
            f"| {name} | {r['top10']:,} | {r['top10_not_returned_by_blend']:,} | "
            f"{r['top10_blend_below_10']:,} | {_f(r['best_of_two_ndcg@10'])} |"
            for name, r in per_baseline.items()
        ]
    return out


def _rank_bands(models: dict[str, Any]) -> list[str]:
    """Per model, the share of its targets in each rank band and the share never returned."""
    out: list[str] = []
    for title, per_model in _per_section(models, "by_rank_band"):
        if not out:
            out += [
                "",
                "## Where the targets land",
                "",
                "Share of the targets at each place of the model's list. The top 10 is HR@10; "
                "the next band, down to the blend's `rerank_top`, is what its reranker could "
                "still lift into it; not returned, for the blend: not among its candidates.",
            ]
        labels = list(next(iter(per_model.values())))
        out += [
            "",
            f"{title}:",
            "",
            "| model | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        out += [
            f"| {name} | " + " | ".join(f"{bands[lb]:.1%}" for lb in labels) + " |"
            for name, bands in per_model.items()
        ]
    return out


def markdown(result: dict[str, Any], plots: list[str] | None = None) -> str:
    models = result["models"]
    platforms = result["platforms"]
    out = [f"# Replay evaluation: {result['dataset']}", ""]
    out += [f"- {n}" for n in result.get("notes", [])]
    out += [
        f"- catalog: {result['catalog_sizes']}; events replayed: {result['events']}, "
        f"evaluated: {result['evaluated_events']}, held out: {result['heldout']}",
        f"- encoder `{result['encoder']}`, ranking head `{result['ranker']}`, sequence model "
        f"`{result.get('sequence')}`",
        "",
        "## Prequential replay (rank, record, then learn)",
        "",
        *_table(models, "prequential", platforms),
        "",
    ]
    if "blend-kafka" in models:
        out += [
            "blend-kafka scores the lists the worker published (top_k items, 10 by default): "
            "its MRR is MRR@top_k and its \"returned\" share its HR@top_k (the other models' "
            "lists are longer).",
            "",
        ]
    if any(m.get("leave_last_out") for m in models.values()):
        out += [
            "## Leave-last-out per domain (the last item vs the whole domain)",
            "",
            *_table(models, "leave_last_out", platforms),
            "",
        ]
        skipped = max(m.get("heldout_repeats_skipped", 0) for m in models.values())
        if skipped:
            out += [
                f"{skipped} held-out item(s) the person had consumed before: skipped, as "
                "repeats are in the stream (no model may return them).",
                "",
            ]
    out += [
        "## Speed, recall and cold start",
        "",
        "returned: share of targets anywhere in the model's list (for the blend: in its "
        "candidates at all). Cold start: a person's first 5 positives on a platform they "
        "came to with positives elsewhere (not their first platform); 1st: the very first "
        "there, 2nd-5th: the rest.",
        "",
        "| model | events | seconds | events/s | returned | cold-start n | cold-start HR@10 "
        "| 1st | 2nd-5th | repeats skipped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in models.items():
        cs = m["cold_start"]
        first, later = cs.get("first_here", {}), cs.get("later_here", {})
        out.append(
            f"| {name} | {m['events']} | {m['seconds']} | {m['events_per_s']} | "
            f"{_f(m.get('returned'))} | {cs['n']} | {_f(cs['hr@10'])} | "
            f"{_f(first.get('hr@10'))} | {_f(later.get('hr@10'))} | "
            f"{m['repeats_skipped']} |"
        )
    for name, m in models.items():
        rr = m.get("reranker")
        if rr is not None:
            said = f"\n{name}: the reranker learned from {rr['answered_lists']:,} answered lists "
            if rr["fitted_at"]:
                fits = ", ".join(f"{n:,}" for n in rr["fitted_at"])
                if rr.get("serve_after") is not None:
                    where = (
                        f"in a process beside the replay, each fit's trees serving "
                        f"{rr['serve_after']:,} lists after it started; the replay waited "
                        f"{rr['waited_seconds']} s for them"
                    )
                else:
                    where = "inside the replay's time"
                said += (
                    f"and was fitted after {fits} of them ({rr['fit_seconds']} s of fitting, "
                    f"{where})."
                )
            else:
                said += "and was never fitted (too few): the blend's order was served."
            out.append(said)
        if "cold_start_probe_seconds" in m:
            out.append(
                f"\n{name}: ranking the cold-start targets again without the person's other "
                f"platforms took {m['cold_start_probe_seconds']} s, left out of its speed."
            )
    out += _long_tail(models)
    out += _rank_bands(models)
    checks = result.get("checks", {})
    out += _against_baselines(checks.get("blend_against_baselines", {}))
    out += ["", "## Targets", ""]
    if "blend_vs_best_baseline" in checks:
        c = checks["blend_vs_best_baseline"]
        out.append(
            f"- blend NDCG@10 {_f(c['blend_ndcg@10'])} vs best baseline "
            f"({c['best_baseline']}) {_f(c['baseline_ndcg@10'])}: lift "
            f"{_f(c['lift'], True)}{_ci(c)} (target +20%)"
        )
    if checks.get("cold_start", {}).get("n"):  # only with people on several platforms
        c = checks["cold_start"]
        out.append(
            f"- cold start on a platform the person came to with positives elsewhere "
            f"({c['n']} targets): HR@10 "
            f"{_f(c['hr@10_with_history'])} with other platforms' history, "
            f"{_f(c['hr@10_without'])} without: lift {_f(c['lift'], True)}{_ci(c)} "
            "(target +25%)"
        )
        out += _cold_start_parts(c)
        if "first_here_other_platforms_alone" in c:
            p = c["first_here_other_platforms_alone"]
            out.append(
                f"  - their first positive, on other platforms' history alone ({p['n']}): "
                f"cross-history {_f(p['hr@10_cross_history'])} vs popularity "
                f"{_f(p['hr@10_popularity'])}"
            )
        if c.get("by_position"):
            out += [
                "",
                "Cold start by the target's place among the person's positives on the platform:",
                "",
                "| place | targets | positives elsewhere before (mean) | HR@10 with | without "
                "| lift |",
                "|---:|---:|---:|---:|---:|---:|",
            ]
            out += [
                f"| {p['position']} | {p['n']} | {p['elsewhere_mean']:.2f} | "
                f"{_f(p['hr@10_with_history'])} | {_f(p['hr@10_without'])} | "
                f"{_f(p['lift'], True)} |"
                for p in c["by_position"]
            ]
            out.append("")
    if checks.get("cold_start_same_model", {}).get("n"):
        c = checks["cold_start_same_model"]
        out.append(
            f"- the same cold-start targets ranked by the same blend at the same moment, only "
            f"the person's own history on their other platforms hidden (as if they had not "
            f"consented; {c['n']} targets): HR@10 {_f(c['hr@10_with_history'])} with it, "
            f"{_f(c['hr@10_without'])} without: lift {_f(c['lift'], True)}{_ci(c)}"
        )
        out += _cold_start_parts(c)
    if "leave_last_out_ndcg@10" in checks:
        c = checks["leave_last_out_ndcg@10"]
        ci = checks.get("leave_last_out_ndcg@10_95ci", {})

        def interval(p: str) -> str:
            low, high = ci.get(p, (None, None))
            return "" if low is None else f" ({_f(low)}-{_f(high)})"

        out.append(
            "- leave-last-out NDCG@10 (blend): "
            + ", ".join(f"{p} {_f(v)}{interval(p)}" for p, v in c.items() if p != "target")
            + " (target 0.10 per domain; in brackets: 95% bootstrap interval over the people)"
        )
    if "events_per_s" in checks:
        out.append(
            f"- replay speed (blend): {checks['events_per_s']['blend']:.0f} events/s (target 5000)"
        )
    if plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    elif plots is not None:
        out += ["", "(no plots: matplotlib is not installed; `pip install .[eval]`)"]
    return "\n".join(out) + "\n"


def plot(result: dict[str, Any], out: Path) -> list[str]:
    """PNG plots next to the report; returns their file names (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import EngFormatter
    except ImportError:
        return []
    events = EngFormatter()  # 150k, not 150000 running into its neighbour
    names = []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, m in result["models"].items():
        pts = [p for p in m["series"] if "hr@10" in p]
        if pts:
            # by target, not by event: Amazon's evaluated users come in bursts at each step,
            # and windows of targets piled up on the same events read as spikes
            xs = [p["targets"] for p in pts]
            line = ax.plot(xs, [p["hr@10_cumulative"] for p in pts], label=name, lw=1.6)[0]
            ax.plot(xs, [p["hr@10"] for p in pts], color=line.get_color(), lw=0.7, alpha=0.3)
    ax.set_xlabel("evaluated targets, in stream order")
    ax.xaxis.set_major_formatter(events)
    ax.set_ylabel("HR@10 so far (faint: per window of targets)")
    ax.set_title(f"{result['dataset']}: HR@10 along the stream")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hr_along_stream.png", dpi=110)
    plt.close(fig)
    names.append("hr_along_stream.png")
    if _plot_models_compared(result, out / "models_compared.png", plt):
        names.append("models_compared.png")
    if _plot_cold_start(result, out / "cold_start.png", plt):
        names.append("cold_start.png")
    if _plot_rank_bands(result, out / "rank_bands.png", plt):
        names.append("rank_bands.png")
    blend = result["models"].get("blend")
    pts = [p for p in (blend or {}).get("series", []) if "weights" in p]
    platforms = sorted({pl for p in pts for pl in p["weights"]})
    if platforms:  # none when the blend never ranked (e.g. --limit before the first target)
        # more signals than the default colour cycle: one fixed colour per signal, all plots
        names_seen = sorted({s for p in pts for w in p["weights"].values() for s in w})
        palette = plt.get_cmap("tab20")
        colour = {s: palette(i % 20) for i, s in enumerate(names_seen)}
        fig, axes = plt.subplots(
            1, len(platforms), figsize=(6 * len(platforms), 4.5), squeeze=False
        )
        for ax, pl in zip(axes[0], platforms, strict=True):
            signals = sorted({s for p in pts for s in p["weights"].get(pl, {})})
            for s in signals:
                xs = [p["event"] for p in pts if pl in p["weights"]]
                ys = [p["weights"][pl][s] for p in pts if pl in p["weights"]]
                ax.plot(xs, ys, label=s, color=colour[s], linewidth=1.2)
            ax.set_title(f"blend weights served: {pl}")
            ax.set_xlabel("event in the stream")
            ax.xaxis.set_major_formatter(events)
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(out / "blend_weights.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        names.append("blend_weights.png")
    return names


def _plot_models_compared(result: dict[str, Any], path: Path, plt: Any) -> bool:
    """Every model's overall NDCG@10 with its 95% bootstrap interval, one panel per section
    (the stream, and leave-last-out where there is one), best first; the blends stand out.
    False (nothing written) when no model ranked a target."""
    models = result["models"]
    sections = [
        (key, title)
        for key, title in (
            ("prequential", "prequential replay"),
            ("leave_last_out", "leave-last-out"),
        )
        if any(m.get(key, {}).get("all") for m in models.values())
    ]
    if not sections:
        return False
    fig, axes = plt.subplots(
        1, len(sections), figsize=(5.5 * len(sections), 0.42 * len(models) + 1.6), squeeze=False
    )
    for ax, (key, title) in zip(axes[0], sections, strict=True):
        rows = sorted(
            (
                (name, m[key]["all"]["ndcg@10"], m.get("ndcg@10_95ci", {}).get(key))
                for name, m in models.items()
                if m.get(key, {}).get("all")
            ),
            key=lambda r: r[1],
        )
        ys = range(len(rows))
        values = [v for _, v, _ in rows]
        colours = ["tab:orange" if name.startswith("blend") else "tab:blue" for name, _, _ in rows]
        ax.barh(ys, values, color=colours, alpha=0.85)
        for y, (_, v, ci) in zip(ys, rows, strict=True):
            end = v
            if ci and all(map(math.isfinite, ci)):
                ax.plot(ci, [y, y], color="black", lw=1.2)
                end = max(v, ci[1])
            ax.text(end, y, f" {v:.4f}", va="center", fontsize=8)
        ax.set_yticks(list(ys), [name for name, _, _ in rows], fontsize=9)
        ax.set_xlabel("NDCG@10, all platforms (line: 95% bootstrap interval)")
        ax.set_title(f"{result['dataset']}: {title}")
        highs = [c[1] for _, _, c in rows if c and math.isfinite(c[1])]
        ax.set_xlim(0, max([*values, *highs]) * 1.25 or 1.0)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_rank_bands(result: dict[str, Any], path: Path, plt: Any) -> bool:
    """The report's "Where the targets land" table as stacked bars: per model and section,
    the share of its targets in each rank band and never returned. False (nothing written)
    when no model ranked a target."""
    sections = _per_section(result["models"], "by_rank_band")
    if not sections:
        return False
    rows = max(len(per_model) for _, per_model in sections)
    fig, axes = plt.subplots(
        1, len(sections), figsize=(5.5 * len(sections), 0.42 * rows + 1.9), squeeze=False
    )
    colours = ("tab:green", "gold", "tab:orange", "lightgrey")
    for ax, (title, per_model) in zip(axes[0], sections, strict=True):
        names = list(per_model)[::-1]  # the table's first model on top
        labels = list(per_model[names[0]])
        left = np.zeros(len(names))
        for label, colour in zip(labels, colours, strict=False):
            shares = np.array([per_model[n][label] for n in names])
            ax.barh(range(len(names)), shares, left=left, color=colour, label=label)
            for y, (x, w) in enumerate(zip(left, shares, strict=True)):
                if w >= 0.06:  # room for the figure
                    ax.text(x + w / 2, y, f"{w:.0%}", ha="center", va="center", fontsize=7)
            left += shares
        ax.set_yticks(range(len(names)), names, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the targets, by their place in the model's list")
        ax.set_title(f"{result['dataset']}: {title}")
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _cold_start_parts(c: dict[str, Any]) -> list[str]:
    """A cold-start check's lines for the person's first positive on the platform and the rest."""
    return [
        f"  - {label} ({c[part]['n']}): {_f(c[part]['hr@10_with_history'])} vs "
        f"{_f(c[part]['hr@10_without'])}, lift {_f(c[part]['lift'], True)}"
        for part, label in (
            ("first_here", "their first positive there"),
            ("later_here", "their 2nd-5th"),
        )
        if part in c
    ]


def _plot_cold_start(result: dict[str, Any], path: Path, plt: Any) -> bool:
    """HR@10 of the cold-start targets with and without other platforms' history (the blend
    that never learned it, and the same blend with only the person's own hidden), by their
    place among the person's positives on the platform, each place labelled with how many
    positives elsewhere came before it on average. False (nothing written) without them."""
    checks = result.get("checks", {})
    other = checks.get("cold_start", {}).get("by_position")
    same = checks.get("cold_start_same_model", {}).get("by_position")
    places = other or same
    if not places:
        return False
    bars = [(places, "hr@10_with_history", "with other platforms' history", "tab:orange")]
    if same and [p["position"] for p in same] == [p["position"] for p in places]:
        bars.append((same, "hr@10_without", "same blend, own history elsewhere hidden",
                     "tab:green"))
    if other:
        bars.append((other, "hr@10_without", "blend that never learned it", "tab:blue"))
    xs = np.arange(len(places))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(places) + 1.5), 4.2))
    for j, (rows, key, label, colour) in enumerate(bars):
        shift = (j - (len(bars) - 1) / 2) * width
        ax.bar(xs + shift, [p[key] for p in rows], width, label=label, color=colour, alpha=0.85)
    ax.set_xticks(
        xs,
        [f"{p['position']}\n{p['elsewhere_mean']:.1f} elsewhere\nn={p['n']}" for p in places],
        fontsize=8,
    )
    ax.set_xlabel("the person's n-th positive on the platform (positives elsewhere before it)")
    ax.set_ylabel("HR@10")
    ax.set_title(f"{result['dataset']}: cold start on a platform reached from another")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(result: dict[str, Any], out: Path) -> Path:
    """Write ``results.json``, each target's rank (``targets.npz``, for ``streamrec
    compare``), the plots and ``report.md`` under ``out``; returns the .md."""
    out.mkdir(parents=True, exist_ok=True)
    targets = result.get("targets", {})
    summary = {k: v for k, v in result.items() if k != "targets"}
    (out / "results.json").write_text(json.dumps(summary, indent=1, sort_keys=False))
    if targets:
        save_targets(targets, out)
    plots = plot(result, out)
    path = out / "report.md"
    path.write_text(markdown(result, plots))
    return path
