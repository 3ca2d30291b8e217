"""The report as one HTML page: inline CSS, images embedded as base64 PNG, no script, nothing fetched.

Self-contained so it can be mailed, attached to an incident or opened from a Prefect artifact link on a machine
with no network. Every value from the registry passes through ``html.escape``: reasons and actors are free text.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape

from lifecycle.gate import Interval
from reporting import plots
from reporting.records import ArmStats, GateResult, LifecycleReport, RolloutReport, StageWindow

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 72rem;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .muted { color: #777; } img { max-width: 100%; }
.badge { display: inline-block; padding: 0.1rem 0.5rem; border-radius: 0.6rem; font-weight: 600; }
.pass, .intact, .promoted, .advance, .approve { background: #d9f2dd; color: #14532d; }
.fail, .broken, .rolled_back, .rejected, .rollback, .reject { background: #fbdada; color: #7f1d1d; }
.inconclusive, .candidate, .running, .paused, .awaiting_approval, .pause, .aborted, .abort, .pin
  { background: #fdf1c7; color: #713f12; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; } .card { border: 1px solid #ddd; border-radius: 0.4rem;
padding: 0.5rem 0.9rem; } .card b { display: block; font-size: 1.1rem; }
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _time(value: datetime) -> str:
    return f"{value.astimezone(UTC) if value.tzinfo else value:%Y-%m-%d %H:%M:%S} UTC"


def _badge(text: str | None) -> str:
    return f'<span class="badge {_e(text)}">{_e(text)}</span>' if text else '<span class="muted">none</span>'


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table of already-escaped cells (callers escape, so a cell may hold markup such as a badge)."""
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _img(png: str | None, alt: str, empty: str) -> str:
    if png is None:
        return f'<p class="muted">{_e(empty)}</p>'
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{png}">'


def _interval(value: Interval | None, *, percent: bool) -> str:
    if value is None:
        return '<span class="muted">—</span>'
    scale, unit = (100, " %") if percent else (1, "")
    return (f"{value.mean * scale:.1f}{unit} <span class='muted'>[{value.lower * scale:.1f}, "
            f"{value.upper * scale:.1f}] n={value.n}</span>")


def _reasons(reasons: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>" if reasons else ""


def summary_section(report: LifecycleReport) -> str:
    s, audit = report.summary, report.audit
    cards = [(alias, f"v{s.aliases[alias]}" if alias in s.aliases else "—") for alias in
             ("champion", "challenger", "previous")]
    cards += [("audit chain", _badge("intact" if audit.ok else "broken")),
              ("rollout in progress", _e(s.active_rollout or "none")), ("last drift check", _e(s.last_drift or "none"))]
    rows = [(_e(v.ref), _badge(v.status), _e(", ".join(v.aliases)), _e(_time(v.created_at)), _e(v.reason))
            for v in reversed(s.versions)]
    return ('<section id="summary"><h2>Summary</h2><div class="cards">'
            + "".join(f'<div class="card">{_e(name)}<b>{value}</b></div>' for name, value in cards)
            + "</div>" + _table(["version", "status", "aliases", "registered", "reason"], rows) + "</section>")


def traffic_section(report: LifecycleReport) -> str:
    rows = [(_e(_time(t.at)), _e(", ".join(f"v{v} {p:g} %" for v, p in sorted(t.shares.items()))),
             _e(f"v{t.shadow}" if t.shadow else ""), _e(t.source)) for t in reversed(report.traffic)]
    since = (f"<p class='muted'>The current split is unchanged since {_e(_time(report.traffic[-1].at))}.</p>"
             if report.traffic else "")
    return ('<section id="traffic"><h2>1. Versions and traffic share over time</h2>'
            + _img(plots.traffic_png(report.traffic), "traffic share per version",
                   "no traffic split or champion recorded yet") + since
            + (_table(["from", "served share", "shadow", "set by"], rows) if rows else "") + "</section>")


def _arm_row(window: StageWindow, arm: ArmStats, first: bool) -> tuple[str, ...]:
    span = f"{window.since:%m-%d %H:%M:%S} → {window.until:%m-%d %H:%M:%S}"
    lead = (_e(window.stage), _e(span), _badge(window.ended_by or "running")) if first else ("", "", "")
    p95 = "—" if arm.latency_p95_ms is None else f"{arm.latency_p95_ms:.1f}"
    return (*lead, _e(f"v{arm.version} ({arm.role})"), str(arm.requests), _interval(arm.error_rate, percent=True),
            _interval(arm.feedback_success, percent=True), _interval(arm.latency_mean_ms, percent=False), p95,
            _reasons(window.reasons) if first else "")


def rollout_block(rollout: RolloutReport) -> str:
    rows = [row for w in rollout.stages for row in (_arm_row(w, w.champion, True), _arm_row(w, w.candidate, False))]
    head = ["stage", "window", "ended by", "arm", "requests", "error rate (95 % CI)", "feedback success (95 % CI)",
            "latency mean ms (95 % CI)", "p95 ms", "decision reasons"]
    return (f"<h3>v{rollout.candidate} against champion v{rollout.champion} {_badge(rollout.phase)}</h3>"
            f"<p class='muted'>plan {_e(rollout.plan)}, started {_e(_time(rollout.started_at))}</p>"
            + _img(plots.rollout_png(rollout), f"rollout of v{rollout.candidate}", "no stage recorded")
            + _table(head, rows))


def rollouts_section(report: LifecycleReport) -> str:
    blocks = "".join(rollout_block(r) for r in report.rollouts) or '<p class="muted">no rollout recorded</p>'
    return ('<section id="rollouts"><h2>2. Rollouts: champion vs candidate per stage</h2>'
            "<p class='muted'>Recomputed from the prediction log over each stage window; 95 % intervals (Wilson for "
            "rates, normal for the mean latency), for reading — the flow decided with anytime-valid tests. At 100 % "
            "the champion serves nothing: the flow compares with its traffic earlier in the rollout.</p>"
            + blocks + "</section>")


def drift_section(report: LifecycleReport) -> str:
    rows = [(_e(f"{p.window_since:%Y-%m-%d %H:%M} → {p.window_until:%Y-%m-%d %H:%M}"), _badge(p.verdict),
             _e(", ".join(p.drifted_columns)),
             _e(", ".join(f"{c} {v:.3g}/{p.thresholds.get(c, float('nan')):g}" for c, v in sorted(p.scores.items()))),
             _e(p.action)) for p in reversed(report.drift)]
    return ('<section id="drift"><h2>3. Drift scores over time</h2>'
            + _img(plots.drift_png(report.drift), "drift score per column", "no drift check recorded")
            + (_table(["window (UTC)", "verdict", "drifted", "score / threshold", "recorded as"], rows) if rows else "")
            + "</section>")


def gate_block(gate: GateResult) -> str:
    scores = [(_e(s.benchmark), str(s.n_items), _interval(s.exact_match, percent=True), f"{s.malformed_rate:.3f}",
               f"{s.latency_p95_ms:.1f}") for s in gate.scores]
    diffs = [(_e(name), _interval(ci, percent=True)) for name, ci in gate.intervals.items()]
    against = f" against {_e(gate.against)}" if gate.against else ""
    return (f"<h3>{_e(gate.ref)} {_badge(gate.status)}</h3><p>gate verdict {_badge(gate.verdict)}{against}</p>"
            + _reasons(gate.reasons)
            + (_table(["golden set", "items", "exact match (95 % CI)", "malformed", "p95 ms"], scores) if scores
               else "<p class='muted'>no evals recorded</p>")
            + (_table(["golden set", "difference vs champion, points (paired bootstrap CI)"], diffs) if diffs else ""))


def gates_section(report: LifecycleReport) -> str:
    return ('<section id="gates"><h2>4. Offline gate of each version</h2>'
            + _img(plots.gates_png(report.gates), "exact match per golden set", "no evals recorded")
            + "".join(gate_block(g) for g in report.gates) + "</section>")


def rollbacks_section(report: LifecycleReport) -> str:
    rows = [(_e(_time(r.at)), _e(r.ref), _e(r.by), _e(r.stage or ""), _e(r.actor), _e(r.reason))
            for r in report.rollbacks]
    return ('<section id="rollbacks"><h2>5. Rollbacks</h2>'
            + (_table(["when", "version", "by", "stage", "actor", "reason"], rows) if rows
               else '<p class="muted">no rollback recorded</p>') + "</section>")


def audit_section(report: LifecycleReport) -> str:
    audit = report.audit
    state = "intact" if audit.ok else "broken"
    return (f'<section id="audit"><h2>6. Audit chain</h2><p>{_badge(state)} {audit.checked} events checked '
            "(hash of every event and its link to the one before, against the stored head)</p>"
            + _reasons(audit.problems) + "</section>")


def render(report: LifecycleReport) -> str:
    """The whole page."""
    model = _e(report.summary.model)
    sections = (summary_section, traffic_section, rollouts_section, drift_section, gates_section, rollbacks_section,
                audit_section)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Lifecycle report: {model}</title><style>{CSS}</style></head><body>"
            f"<h1>Lifecycle report: {model}</h1><p class='muted'>generated "
            f"{_e(_time(report.summary.generated_at))} from the registry store</p>"
            + "".join(section(report) for section in sections) + "</body></html>\n")


def summary_markdown(report: LifecycleReport) -> str:
    """A few lines for a Prefect artifact's description: the aliases, the audit chain, what is going on."""
    s, audit = report.summary, report.audit
    aliases = ", ".join(f"{a} v{n}" for a, n in sorted(s.aliases.items())) or "no alias"
    chain = "intact" if audit.ok else f"**broken** ({len(audit.problems)} problems)"
    return (f"Lifecycle report of **{s.model}**: {len(s.versions)} versions; {aliases}. "
            f"Audit chain {chain} ({audit.checked} events). Rollout in progress: {s.active_rollout or 'none'}. "
            f"Rollbacks: {len(report.rollbacks)}. Last drift check: {s.last_drift or 'none'}.")
