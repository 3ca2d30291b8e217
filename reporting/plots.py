"""The report's plots as PNG images in base64 text, for ``<img src="data:image/png;base64,...">``.

Figures are drawn with matplotlib's object API on the Agg canvas, set here in code, never through pyplot: pyplot
keeps global state (a current figure, a GUI backend picked at import) that is unsafe in Prefect's task threads and
wants a display; an Agg canvas renders to memory with neither. Each function returns None when there is nothing to
draw, and the page says so in words instead.
"""

from __future__ import annotations

import base64
import io
from datetime import timedelta
from typing import TYPE_CHECKING

from lifecycle.gate import Interval
from reporting.records import DriftPoint, GateResult, RolloutReport, TrafficStep

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CHAMPION, CANDIDATE = "#1f77b4", "#d62728"


def _figure(width: float, height: float) -> Figure:
    # Imported here: every flow imports this module (its report task) in a fresh process, and matplotlib is
    # ~0.4 s of that start whether or not a report is drawn.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _colour(version: int) -> str:
    """One colour per version across the plots (matplotlib's ten-colour cycle)."""
    return f"C{(version - 1) % 10}"


def traffic_png(steps: list[TrafficStep]) -> str | None:
    """Step plot: each version's percent of served traffic from one split change to the next; shaded while a
    version shadows (it answers copies, 0 % served).

    The axis ends a little after the last change rather than at the report's time: months of an unchanged split
    would squeeze every rollout into one vertical line. The page says since when the split is unchanged.
    """
    if not steps:
        return None
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    span = steps[-1].at - steps[0].at
    times = [s.at for s in steps] + [steps[-1].at + max(span / 20, timedelta(minutes=1))]
    for version in sorted({v for s in steps for v in s.shares}):
        values = [s.shares.get(version, 0.0) for s in steps]
        ax.step(times, values + values[-1:], where="post", label=f"v{version}", linewidth=2, color=_colour(version))
    for step, until in zip(steps, times[1:], strict=True):
        if step.shadow is not None:
            ax.axvspan(step.at, until, color=_colour(step.shadow), alpha=0.2, label=f"v{step.shadow} shadow")
    ax.set_ylim(-3, 103)
    ax.set_ylabel("% of served traffic")
    ax.grid(alpha=0.3)
    _legend_right(ax)
    fig.autofmt_xdate()
    return _png(fig)


def _legend_right(ax, *others) -> None:
    """A legend beside ``ax`` with each label of it and ``others`` once (a version may shadow several times)."""
    unique = {}
    for axes in (ax, *others):
        handles, names = axes.get_legend_handles_labels()
        unique.update(zip(names, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)


def _errorbar(ax, x: float, interval: Interval | None, colour: str, label: str) -> None:
    if interval is None:
        return
    ax.errorbar([x], [interval.mean], yerr=[[interval.mean - interval.lower], [interval.upper - interval.mean]],
                fmt="o", color=colour, capsize=4, label=label)


def rollout_png(rollout: RolloutReport) -> str | None:
    """Champion vs candidate per stage window: error rate, feedback success and mean latency with 95 % intervals."""
    if not rollout.stages:
        return None
    panels = (("error rate", "error_rate"), ("feedback success", "feedback_success"),
              ("mean latency (ms)", "latency_mean_ms"))
    fig = _figure(10, 3.2)
    axes = fig.subplots(1, len(panels))
    labels = [f"{w.stage}\n→ {w.ended_by or 'running'}" for w in rollout.stages]
    for ax, (title, field) in zip(axes, panels, strict=True):
        for i, window in enumerate(rollout.stages):
            for offset, arm, colour in ((-0.12, window.champion, CHAMPION), (0.12, window.candidate, CANDIDATE)):
                _errorbar(ax, i + offset, getattr(arm, field), colour, f"v{arm.version} ({arm.role})")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.grid(alpha=0.3, axis="y")
    _legend_right(axes[-1], *axes[:-1])  # the candidate is the shadow, then the challenger: each once
    return _png(fig)


def drift_png(points: list[DriftPoint]) -> str | None:
    """Each column's drift score as a multiple of its threshold (above 1: drifted), per monitored window."""
    if not points:
        return None
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    for column in sorted({c for p in points for c in p.scores if p.thresholds.get(c)}):
        shown = [p for p in points if column in p.scores and p.thresholds.get(column)]
        ax.plot([p.window_until for p in shown], [p.scores[column] / p.thresholds[column] for p in shown],
                marker="o", label=column)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_ylabel("score / threshold")
    ax.grid(alpha=0.3)
    _legend_right(ax)
    fig.autofmt_xdate()
    return _png(fig)


def gates_png(gates: list[GateResult]) -> str | None:
    """Exact match per golden set and version, with 95 % Wilson intervals."""
    scored = [g for g in gates if any(s.exact_match for s in g.scores)]
    if not scored:
        return None
    benchmarks = sorted({s.benchmark for g in scored for s in g.scores})
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    width = 0.8 / len(scored)
    for k, gate in enumerate(scored):
        by_name = {s.benchmark: s.exact_match for s in gate.scores if s.exact_match}
        xs = [i + (k - (len(scored) - 1) / 2) * width for i, b in enumerate(benchmarks) if b in by_name]
        found = [by_name[b] for b in benchmarks if b in by_name]
        number = int(gate.ref.rsplit(":v", 1)[-1])
        ax.bar(xs, [e.mean for e in found], width=width * 0.9, label=f"v{number}", color=_colour(number),
               yerr=[[e.mean - e.lower for e in found], [e.upper - e.mean for e in found]], capsize=3)
    ax.set_xticks(range(len(benchmarks)), benchmarks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact match")
    ax.grid(alpha=0.3, axis="y")
    _legend_right(ax)
    return _png(fig)
