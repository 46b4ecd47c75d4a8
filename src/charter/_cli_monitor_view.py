"""How `charter monitors`, `charter alerts` and `charter autonomy proposals` print.

A table for a terminal (rich), or the API's JSON with `--json`. Rates on a small sample
are dimmed rather than hidden: a reader sees the figure and how little it says yet.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from charter._cli_monitor_sources import TREND_CELLS, Gathered
from charter._cli_store import out
from charter.monitors import FIGURE_FIELDS

__all__ = [
    "SMALL_SAMPLE",
    "dump_json",
    "print_alerts",
    "print_monitors",
    "print_proposals",
    "sparkline",
]

#: A rate on fewer than this many is shown dimmed: it says little yet (the example
#: policy's alerts ask for 10 to 50 before they fire).
SMALL_SAMPLE = 20
#: The PSI at which inputs have drifted (red), and at which they are worth a look (yellow).
_DRIFTED, _DRIFTING = 0.25, 0.1
_BARS = "▁▂▃▄▅▆▇█"
_TREND = "success\ntrend"
_NONE = "—"


def sparkline(values: Sequence[float | None]) -> str:
    """Shares from 0 to 1 as bars `▁` (0) to `█` (1); `·` where a step had no sample.

    The scale is absolute, not stretched to the values: a rate that wavers between 0.95
    and 1.0 must not look like one that falls to nothing.
    """
    cells = []
    for value in values:
        if value is None:
            cells.append("·")
        else:
            cells.append(_BARS[min(max(round(value * (len(_BARS) - 1)), 0), len(_BARS) - 1)])
    return "".join(cells)


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _seconds(value: float) -> str:
    """A duration as `4.2s`, `35s`, `3m20s`, `2h05m` or `3d04h`."""
    if value < 10:
        return f"{value:.1f}s"
    whole = round(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 2 * 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _span(seconds: int) -> str:
    """A window in words: `1 h`, `2 d`, `90 min`, `45 s`."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _sample(figures: Mapping[str, Any], name: str) -> int:
    """The count behind figure `name` (`FIGURE_FIELDS` names it)."""
    meta = FIGURE_FIELDS[name]
    return int(figures.get(meta.sample or name) or 0)


def _cell(text: str | None, sample: int, style: str = "") -> Text:
    """A figure's cell: `—` for an empty sample, dimmed for a small one."""
    if text is None:
        return Text(_NONE, style="dim")
    return Text(text, style="dim" if sample < SMALL_SAMPLE else style)


def _rate(figures: Mapping[str, Any], name: str) -> Text:
    value = figures.get(name)
    return _cell(None if value is None else _percent(value), _sample(figures, name))


def _pair(figures: Mapping[str, Any], first: str, second: str, show: Any) -> Text:
    """Two figures of one sample in one cell: `12s/1m40s`, `0.12/0.05`."""
    a, b = figures.get(first), figures.get(second)
    if a is None and b is None:
        return _cell(None, 0)
    text = f"{_NONE if a is None else show(a)}/{_NONE if b is None else show(b)}"
    return _cell(text, _sample(figures, first))


def _worst_drift(figures: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The drift figure of the field that moved most, if any field has a PSI."""
    scored = [d for d in figures.get("drift") or () if d.get("psi") is not None]
    return max(scored, key=lambda d: float(d["psi"])) if scored else None


def _drift(figures: Mapping[str, Any]) -> Text:
    worst = _worst_drift(figures)
    if worst is None:
        return _cell(None, 0)
    psi = float(worst["psi"])
    tone = "red" if psi >= _DRIFTED else "yellow" if psi >= _DRIFTING else ""
    sample = min(int(worst["recent_samples"]), int(worst["baseline_samples"]))
    return _cell(f"{psi:.2f} {worst['field']}", sample, tone)


def _quality(figures: Mapping[str, Any]) -> Text:
    """Data-quality problems counted: stale or ageless sources, missing fields, ranges."""
    checked = sum(
        int(figures.get(n) or 0)
        for n in ("freshness_checked", "completeness_checked", "range_checked")
    )
    if not checked:
        return _cell(None, 0)
    problems = [
        f"{count} {what}"
        for what, count in (
            ("stale", int(figures.get("freshness_stale") or 0)),
            ("no age", int(figures.get("freshness_missing_age") or 0)),
            ("incomplete", int(figures.get("completeness_missing") or 0)),
            ("out of range", int(figures.get("range_violations") or 0)),
        )
        if count
    ]
    if not problems:
        return _cell("ok", checked)
    return _cell(", ".join(problems), checked, "yellow")


def _trend(series: Mapping[str, Any] | None) -> Text:
    if series is None:
        return Text("")
    values = [p.get("success_rate") for p in series.get("points", ())]
    if all(v is None for v in values):
        return Text(_NONE, style="dim")
    return Text(sparkline(values))


def _level(agent: Mapping[str, Any] | None) -> Text:
    """The autonomy level in force; `↓`/`↑` when it is not the one its profile gives."""
    if agent is None or agent.get("autonomy") is None:
        return Text(_NONE, style="dim")
    level, base = int(agent["autonomy"]), agent.get("profile_autonomy")
    if base is None or level == base:
        return Text(str(level))
    return Text(f"{level} ↓" if level < base else f"{level} ↑", style="bold")


def _where(alert: Mapping[str, Any]) -> str:
    """Where an alert fires: `support-bot · payments.refund`, or `the fleet`."""
    named = [str(p) for p in (alert.get("agent"), alert.get("action")) if p is not None]
    return " · ".join(named) or "the fleet"


def dump_json(value: Mapping[str, Any]) -> None:
    """Print JSON on standard output: plain text, no console markup or wrapping."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


#: The figure columns of `charter monitors`, headed short so the table fits a terminal.
_FIGURE_COLUMNS = (
    "deci-\nsions",
    "auto\nok",
    "all\nok",
    "esc",
    "appr",
    "rej",
    "review\np50/p95",
    "outcome\np50/p95",
    "brier\n/ece",
    "drift\npsi",
    "data\nquality",
)


def _columns(level: str) -> list[str]:
    names = {
        "model": ["agent", "action", "model"],
        "action": ["agent", "action"],
        "agent": ["agent"],
        "fleet": [],
    }[level]
    autonomy = [] if level == "fleet" else ["level"]
    # A series is an agent's (or one of its actions'): the fleet has no trend.
    trend = [] if level == "fleet" else [_TREND]
    return [*names, *autonomy, *_FIGURE_COLUMNS, *trend]


def _row(
    level: str,
    figures: Mapping[str, Any],
    series: Mapping[str, Any] | None,
    agent: Mapping[str, Any] | None,
) -> list[Text]:
    model = " ".join(str(v) for v in (figures["model_id"], figures["model_version"]) if v)
    names = {
        "model": [figures["agent"], figures["action"], model or _NONE],
        "action": [figures["agent"], figures["action"]],
        "agent": [figures["agent"]],
        "fleet": [],
    }[level]
    cells = [Text(str(n)) for n in names]
    if level != "fleet":
        cells.append(_level(agent))
    cells += [
        Text(str(figures["decisions"])),
        _rate(figures, "autonomous_success_rate"),
        _rate(figures, "success_rate"),
        _rate(figures, "escalation_rate"),
        _rate(figures, "approval_rate"),
        _rate(figures, "rejection_rate"),
        _pair(figures, "reviewer_latency_p50_seconds", "reviewer_latency_p95_seconds", _seconds),
        _pair(figures, "time_to_outcome_p50_seconds", "time_to_outcome_p95_seconds", _seconds),
        _pair(figures, "brier_score", "expected_calibration_error", lambda v: f"{v:.2f}"),
        _drift(figures),
        _quality(figures),
    ]
    if level != "fleet":
        cells.append(_trend(series))
    return cells


def _notes(agents: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A line for each agent not at its profile's level, or with a proposal open."""
    lines = []
    for name, agent in agents.items():
        said = []
        level, base = agent.get("autonomy"), agent.get("profile_autonomy")
        demotion, proposal = agent.get("demotion"), agent.get("proposal")
        if level is None:
            said.append("not an agent the policy or the registry defines")
        elif demotion is not None:
            said.append(
                f"autonomy {level} (its profile: {base}), demoted by the controller's rule "
                f"`{demotion['rule']}` at {demotion['at']}"
            )
        elif base is not None and level != base:
            said.append(f"autonomy {level} (its profile: {base}), set by a person")
        if proposal is not None:
            said.append(
                f"proposed back to level {proposal['level']}: "
                f"`charter autonomy accept {name}` or `decline {name} --reason …`"
            )
        if said:
            lines.append(f"{name}: " + "; ".join(said))
    return lines


def print_monitors(
    gathered: Gathered, level: str, agent: str | None, action: str | None, *, as_json: bool
) -> None:
    """Print what `charter monitors` gathered: JSON, or a table with its legend and notes."""
    if as_json:
        dump_json(
            {
                "at": gathered.at,
                "level": level,
                "window_seconds": gathered.figures[0]["window_seconds"]
                if gathered.figures
                else None,
                "step_seconds": gathered.step_seconds,
                "groups": [
                    {"figures": f, "series": s}
                    for f, s in zip(gathered.figures, gathered.series, strict=True)
                ],
                "agents": list(gathered.agents.values()),
            }
        )
        return
    if gathered.empty is not None:
        out.print(f"{gathered.empty}: no figures yet", markup=False)
        return
    of = "".join(
        f" of {what} `{name}`" for what, name in (("agent", agent), ("action", action)) if name
    )
    if not gathered.figures:
        until = f" to {gathered.at}" if gathered.at else ""
        out.print(
            f"no decisions{of} in the window{until} in {gathered.place}: no figures to show",
            markup=False,
        )
        return
    seconds = int(gathered.figures[0]["window_seconds"])
    trend = (
        f"; trend: success rate per {_span(gathered.step_seconds)}, ▁ 0% to █ 100%"
        if gathered.step_seconds
        else ""
    )
    out.print(
        f"figures{of} over the {_span(seconds)} to {gathered.at} in {gathered.place}{trend}",
        markup=False,
    )
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for name in _columns(level):
        # Ids are copied into other commands and a trend is read whole: neither wraps;
        # a figure folds onto a second line rather than lose digits to an ellipsis.
        whole = name in ("agent", "action", "model", _TREND)
        table.add_column(
            name,
            no_wrap=whole,
            overflow="ellipsis" if whole else "fold",
            min_width=TREND_CELLS if name == _TREND else None,
        )
    for figures, series in zip(gathered.figures, gathered.series, strict=True):
        named = gathered.agents.get(figures["agent"]) if figures["agent"] is not None else None
        table.add_row(*_row(level, figures, series, named))
    out.print(table)
    levels = "" if level == "fleet" else "level: autonomy in force (↓ below its profile's); "
    out.print(
        f"{levels}auto ok, all ok: success rate of"
        " autonomous and of all outcomes; esc, appr, rej: escalation, approval and rejection"
        f" rates; drift: the PSI of the field that moved most (0.1 worth a look, 0.25"
        f" drifted); dimmed: a sample under {SMALL_SAMPLE}; {_NONE}: no sample",
        style="dim",
        markup=False,
    )
    for line in _notes(gathered.agents):
        out.print(line, markup=False)


def print_alerts(firing: Sequence[Mapping[str, Any]], place: str, *, as_json: bool) -> None:
    """Print the alerts firing in `place`: JSON, or a table with each one's runbook."""
    if as_json:
        dump_json({"alerts": list(firing)})
        return
    if not firing:
        out.print(f"no alerts firing in {place}", markup=False)
        return
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for name in ("severity", "alert", "where", "value", "threshold", "since", "runbook"):
        # An alert's id is copied into searches whole; the rest folds rather than lose
        # characters to an ellipsis on a narrow terminal.
        table.add_column(name, no_wrap=name == "alert", overflow="fold")
    tones = {"critical": "bold red", "warning": "yellow"}
    for alert in firing:
        value = alert.get("value")
        shown_value = _NONE if value is None else f"{value:.3g}"
        severity = str(alert.get("severity") or "")
        table.add_row(
            Text(severity, style=tones.get(severity, "")),
            Text(str(alert["alert"])),
            Text(_where(alert)),
            Text(f"{shown_value} on {alert.get('sample', 0)}"),
            Text(str(alert.get("condition") or "")),
            Text(str(alert.get("since") or "")),
            Text(str(alert.get("runbook") or _NONE)),
        )
    out.print(table)


def print_proposals(proposals: Sequence[Mapping[str, Any]], place: str, *, as_json: bool) -> None:
    """Print the controller's open proposals in `place`: JSON, or a table saying how to answer."""
    if as_json:
        dump_json({"proposals": list(proposals)})
        return
    if not proposals:
        out.print(f"no proposals open in {place}", markup=False)
        return
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for name in ("agent", "level", "clean\ndecisions", "demoted by", "proposed at"):
        # The agent's id is copied into `accept`/`decline` whole; the rest may fold.
        table.add_column(name, no_wrap=name == "agent", overflow="fold")
    for p in proposals:
        table.add_row(
            Text(str(p["agent"])),
            Text(f"{p.get('from')} → {p['level']}"),
            Text(str(p.get("decisions", ""))),
            Text(str(p.get("rule") or "")),
            Text(str(p.get("at") or "")),
        )
    out.print(table)
    out.print(
        "accept: `charter autonomy accept AGENT`; decline: `charter autonomy decline AGENT"
        " --reason TEXT`",
        markup=False,
    )
