"""`charter monitors`, `charter alerts` and `charter autonomy`: the monitors from a shell.

They read the store itself (`--db PATH` or `--store URL`, `CHARTER_STORE` too) or ask a
running server (`--server URL` with an API key, as `GET /v1/monitors`, `/v1/alerts` and
`/v1/autonomy/proposals` do, so the server's roles decide who may).

On a store the reading commands open it read-only (a missing file is refused, never
created) and fold the ledger as a restarted server would (`fold_ledger`); the figures are
those at the ledger's last entry, not at the wall clock, so an old ledger shows the same
figures every time. Alerts and proposals are what the ledger records: the server that
leads judges the rules, these commands judge nothing. `charter autonomy accept` and
`decline` write: on a store through the service, under the policy the ledger deployed
last, or through a server's API.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast
from urllib.parse import quote

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from charter._cli_server import KeyOption, ServerOption, ask_server, one_place
from charter._cli_store import (
    DbOption,
    StoreOption,
    err,
    open_reading,
    open_writing,
    out,
    shown,
    target,
)
from charter.controls import AutonomyController, Demotion, ServiceState
from charter.errors import CharterError, NotFound
from charter.ledger import events
from charter.monitors import FIGURE_FIELDS, AlertBook, Level
from charter.policy import Bundle
from charter.service import Charter, format_time, load_recorded_bundle
from charter.service._monitors import fold_ledger
from charter.store import LedgerReader, LedgerStore

__all__ = [
    "SMALL_SAMPLE",
    "alerts_command",
    "autonomy_accept",
    "autonomy_app",
    "autonomy_decline",
    "autonomy_proposals",
    "monitors_command",
    "sparkline",
]

autonomy_app = typer.Typer(
    help="The autonomy controller's proposals to give demoted agents their level back.",
    no_args_is_help=True,
)

#: A rate on fewer than this many is shown dimmed: it says little yet (the example
#: policy's alerts ask for 10 to 50 before they fire).
SMALL_SAMPLE = 20
#: The sparkline's cells at the most: the window is cut into this many steps.
TREND_CELLS = 12
#: A series step is at least a minute (what the API accepts), in whole buckets.
_MIN_STEP = 60
#: The PSI at which inputs have drifted (red), and at which they are worth a look (yellow).
_DRIFTED, _DRIFTING = 0.25, 0.1
_BARS = "▁▂▃▄▅▆▇█"
_TREND = "success\ntrend"
_NONE = "—"
_LEVELS = ("model", "action", "agent", "fleet")
_STATE_KINDS = frozenset({events.AUTONOMY_CHANGED, events.AGENT_UPDATED, events.POLICY_DEPLOYED})
_AUTONOMY_KINDS = frozenset(
    {events.AUTONOMY_CHANGED, events.AUTONOMY_PROPOSED, events.AUTONOMY_DECLINED}
)
_ALERT_KINDS = frozenset({events.ALERT_FIRED, events.ALERT_RESOLVED})
#: The counts that say a group did something in the window (figures of a slice the
#: horizon still holds but that was quiet in the window are not shown).
_ACTIVITY = ("decisions", "outcomes", "approvals_ended", "grants_redeemed")

AgentOption = Annotated[
    str | None, typer.Option("--agent", help="Only this agent's figures.", show_default=False)
]
ActionOption = Annotated[
    str | None, typer.Option("--action", help="Only this action's figures.", show_default=False)
]
LevelOption = Annotated[
    str,
    typer.Option(
        "--level",
        help="One row per model (agent, action, model id and version), action (agent and"
        " action), agent, or the fleet.",
    ),
]
WindowOption = Annotated[
    int | None,
    typer.Option(
        "--window",
        min=60,
        max=31 * 86400,
        help="Seconds the figures (and the trend) cover; the policy's window by default.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AgentArgument = Annotated[str, typer.Argument(help="The agent whose proposal it is.")]


# -- formatting -----------------------------------------------------------------------


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


def _dump(value: Mapping[str, Any]) -> None:
    """Print JSON on standard output: plain text, no console markup or wrapping."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


# -- what a store says ----------------------------------------------------------------


def _state(store: LedgerReader, head: int) -> ServiceState:
    """Autonomy overrides, the agent registry and the deployed version, through `head`."""
    found = store.entries(kinds=_STATE_KINDS)
    return ServiceState.fold(itertools.takewhile(lambda e: e.seq <= head, found))


def _deployed(store: LedgerReader, state: ServiceState, place: str) -> Bundle | None:
    """The bundle the ledger deployed last; None if it never deployed one."""
    if state.deployed is None:
        return None
    try:
        bundle = load_recorded_bundle(store, state.deployed)
    except CharterError as exc:
        err.print(f"error: {place}: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    if bundle is None:
        err.print(
            f"error: {place}: the deployed policy `{state.deployed}` is not stored in the ledger",
            markup=False,
        )
        raise typer.Exit(2)
    return bundle


def _demotion_json(found: Demotion | None) -> dict[str, Any] | None:
    """A controller's demotion as `Monitors.demotion` and the UI give it."""
    if found is None:
        return None
    return {
        "agent": found.agent,
        "rule": found.rule,
        "at": format_time(found.at),
        "from": found.before,
        "level": found.after,
    }


def _controller(store: LedgerReader) -> AutonomyController:
    controller = AutonomyController()
    for entry in store.entries(kinds=_AUTONOMY_KINDS):
        controller.apply(entry.kind, entry.at, entry.payload_object())
    return controller


@dataclass(frozen=True, slots=True)
class _Gathered:
    """What `charter monitors` shows, from a store or a server, as the API's JSON."""

    place: str
    at: str | None
    figures: list[dict[str, Any]]
    series: list[dict[str, Any] | None]
    agents: dict[str, dict[str, Any]]
    step_seconds: int | None = None
    empty: str | None = None


def _active(figures: Mapping[str, Any]) -> bool:
    return any(figures.get(n) for n in _ACTIVITY)


def _trend_plan(bucket: int, window: int) -> tuple[int, int]:
    """(points, step seconds) cutting `window` into at most `TREND_CELLS` whole-bucket steps.

    The trend never reaches back further than the window: the figures of that window
    were there to read, so its series is too.
    """
    buckets = max(1, window // bucket)
    per = max(-(-buckets // TREND_CELLS), -(-_MIN_STEP // bucket))
    return max(2, buckets // per), per * bucket


def _series_action(level: str, figures: Mapping[str, Any]) -> str | None:
    """The action a row's trend follows: its own below the agent level, else all."""
    return figures.get("action") if level in ("model", "action") else None


def _from_store(
    where: str | Path, agent: str | None, action: str | None, level: str, window: int | None
) -> _Gathered:
    place = shown(where)
    store = open_reading(where)
    try:
        head = store.head().seq
        if not head:
            return _Gathered(place, None, [], [], {}, empty=f"the ledger {place} is empty")
        state = _state(store, head)
        bundle = _deployed(store, state, place)
        if bundle is None:
            return _Gathered(
                place, None, [], [], {}, empty=f"no policy was ever deployed in {place}"
            )
        book, _alerts, controller, folded = fold_ledger(store, bundle.monitors)
        last = store.entry(folded)
        assert last is not None  # `folded` is a position the ledger held
        at = last.at
    finally:
        store.close()
    try:
        grouped = cast("Level", level)  # one of `_LEVELS`: `monitors_command` checked it
        found = book.figures(at, agent=agent, action=action, window=window, level=grouped)
    except ValueError as exc:
        err.print(f"error: --window: {exc}", markup=False)
        raise typer.Exit(2) from None
    rows = [f.to_json() for f in found]
    rows = [f for f in rows if _active(f)]
    if not rows:
        return _Gathered(place, at, [], [], {})
    points, step = _trend_plan(book.config.bucket_seconds, int(rows[0]["window_seconds"]))
    series: list[dict[str, Any] | None] = []
    for row in rows:
        if row["agent"] is None:
            series.append(None)
            continue
        try:
            drawn = book.series(
                at, row["agent"], _series_action(level, row), points=points, step_seconds=step
            )
        except ValueError as exc:
            err.print(f"error: the trend: {exc}", markup=False)
            raise typer.Exit(2) from None
        series.append(drawn.to_json())
    agents: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["agent"] for r in rows if r["agent"] is not None):
        profile = state.profile(name, bundle.agents)
        base = profile.autonomy if profile is not None else None
        agents[name] = {
            "agent": name,
            "autonomy": state.autonomy.get(name, base),
            "profile_autonomy": base,
            "demotion": _demotion_json(controller.demotion(name)),
            "proposal": controller.proposal(name),
        }
    # No row of an agent (the fleet): no series was drawn, so no step is said.
    return _Gathered(place, at, rows, series, agents, step if agents else None)


# -- what a server says ---------------------------------------------------------------


def _agent_over_http(server: str, key: str | None, agent: str) -> dict[str, Any] | None:
    """The agent as the server's decisions see it; None if the server knows no such agent."""
    # A decision of an agent the policy does not define is recorded (denied), so the
    # figures may name an agent the server answers 404 for. That is no error here, and
    # `ask_server` prints its refusals: its words are held back until they are one.
    code = 0
    with err.capture() as said:
        try:
            return ask_server(server, key, "GET", f"/v1/agents/{quote(agent, safe='')}")
        except typer.Exit as stop:
            code = stop.exit_code
    if code == 1:
        return None
    err.print(said.get(), end="", markup=False, highlight=False)
    raise typer.Exit(code)


def _from_server(
    server: str,
    key: str | None,
    agent: str | None,
    action: str | None,
    level: str,
    window: int | None,
) -> _Gathered:
    params = {"agent": agent, "action": action, "level": level, "window": window}
    found = ask_server(server, key, "GET", "/v1/monitors", params=params)
    rows = [f for f in found.get("figures", []) if _active(f)]
    if not rows:
        return _Gathered(server, None, [], [], {})
    at = str(rows[0]["end"])
    named = [r for r in rows if r["agent"] is not None]
    series: list[dict[str, Any] | None] = [None] * len(rows)
    step: int | None = None
    if named:
        # The series of one bucket per point says how long a bucket is, which a step
        # must be a whole number of.
        first = {"agent": named[0]["agent"], "points": 2}
        probe = ask_server(server, key, "GET", "/v1/monitors/series", params=first)
        points, step = _trend_plan(int(probe["step_seconds"]), int(rows[0]["window_seconds"]))
        for i, row in enumerate(rows):
            if row["agent"] is None:
                continue
            asked = {
                "agent": row["agent"],
                "action": _series_action(level, row),
                "points": points,
                "step": step,
            }
            series[i] = ask_server(server, key, "GET", "/v1/monitors/series", params=asked)
    proposals = ask_server(server, key, "GET", "/v1/autonomy/proposals").get("proposals", [])
    open_ = {str(p["agent"]): p for p in proposals}
    agents: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(str(r["agent"]) for r in named):
        seen = _agent_over_http(server, key, name)
        agents[name] = {
            "agent": name,
            "autonomy": None if seen is None else seen.get("autonomy_in_force"),
            "profile_autonomy": None if seen is None else seen.get("autonomy"),
            # The API does not say which of an agent's changes were the controller's.
            "demotion": None,
            "proposal": open_.get(name),
        }
    return _Gathered(server, at, rows, series, agents, step)


# -- the commands -----------------------------------------------------------------------


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


def monitors_command(
    agent: AgentOption = None,
    action: ActionOption = None,
    level: LevelOption = "action",
    window: WindowOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Show the monitors' figures per agent and action, and their trend (reads only).

    On a store the figures are those at the ledger's last entry. Rates on fewer than 20
    are dimmed; `—` is a figure of an empty sample.
    """
    if level not in _LEVELS:
        err.print(f"error: --level is one of {', '.join(_LEVELS)}, not `{level}`", markup=False)
        raise typer.Exit(2)
    one_place(server, db, store_url)
    if server is not None:
        gathered = _from_server(server, key, agent, action, level, window)
    else:
        gathered = _from_store(target(db, store_url), agent, action, level, window)
    if as_json:
        _dump(
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


def alerts_command(
    as_json: JsonOption = False,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """List the alerts firing, each with its figure, threshold and runbook (reads only)."""
    one_place(server, db, store_url)
    if server is not None:
        firing = list(ask_server(server, key, "GET", "/v1/alerts").get("alerts", []))
        place = server
    else:
        where: str | Path = target(db, store_url)
        store = open_reading(where)
        try:
            book = AlertBook()
            for entry in store.entries(kinds=_ALERT_KINDS):
                book.apply(entry.kind, entry.payload_object())
        finally:
            store.close()
        firing = [dict(a) for a in book.firing()]
        place = shown(where)
    if as_json:
        _dump({"alerts": firing})
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


@autonomy_app.command("proposals")
def autonomy_proposals(
    as_json: JsonOption = False,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """List the controller's open proposals to give agents their level back (reads only)."""
    one_place(server, db, store_url)
    if server is not None:
        proposals = list(ask_server(server, key, "GET", "/v1/autonomy/proposals")["proposals"])
        place = server
    else:
        where: str | Path = target(db, store_url)
        store = open_reading(where)
        try:
            proposals = [dict(p) for p in _controller(store).proposals()]
        finally:
            store.close()
        place = shown(where)
    if as_json:
        _dump({"proposals": proposals})
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


def _service(where: str | Path, agent: str) -> Charter:
    """The service on the store, under the policy the ledger deployed last.

    Exits 2 if the ledger never deployed one, 1 if no such agent is defined.
    """
    place = shown(where)
    store: LedgerStore = open_writing(where)
    try:
        state = _state(store, store.head().seq)
        bundle = _deployed(store, state, place)
        if bundle is None:
            err.print(f"error: no policy was ever deployed in {place}", markup=False)
            raise typer.Exit(2)
        if state.profile(agent, bundle.agents) is None:
            err.print(
                f"error: no agent `{agent}` in the policy or the registry of {place}",
                markup=False,
            )
            raise typer.Exit(1)
        return Charter(bundle, store)
    except BaseException:
        store.close()  # the service did not take it over
        raise


def _answer_over_http(
    server: str, key: str | None, agent: str, verb: str, body: dict[str, Any] | None = None
) -> None:
    path = f"/v1/autonomy/proposals/{quote(agent, safe='')}/{verb}"
    ask_server(server, key, "POST", path, body=body)


@autonomy_app.command("accept")
def autonomy_accept(
    agent: AgentArgument,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Give a demoted agent the level the controller proposes (exit 1 if none is open)."""
    one_place(server, db, store_url)
    if server is not None:
        _answer_over_http(server, key, agent, "accept")
        seen = _agent_over_http(server, key, agent)
        level = None if seen is None else seen.get("autonomy_in_force")
        out.print(
            f"accepted the proposal for `{agent}` through {server}: autonomy level {level}",
            markup=False,
        )
        return
    where = target(db, store_url)
    with _service(where, agent) as charter:
        try:
            charter.monitors.accept(agent, by="cli")
        except NotFound as exc:
            err.print(f"error: {exc.message} in {shown(where)}", markup=False)
            raise typer.Exit(1) from None
        level = charter.autonomy(agent)
    out.print(
        f"accepted the proposal for `{agent}` in {shown(where)}: autonomy level {level}",
        markup=False,
    )


@autonomy_app.command("decline")
def autonomy_decline(
    agent: AgentArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded with the decline.")],
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Keep a demoted agent where it is; the controller may propose again after more work."""
    if not reason.strip() or len(reason) > 2000:
        err.print("error: --reason must say why (1 to 2,000 characters)")
        raise typer.Exit(2)
    one_place(server, db, store_url)
    if server is not None:
        _answer_over_http(server, key, agent, "decline", {"reason": reason})
        out.print(f"declined the proposal for `{agent}` through {server}", markup=False)
        return
    where = target(db, store_url)
    with _service(where, agent) as charter:
        try:
            charter.monitors.decline(agent, by="cli", reason=reason)
        except NotFound as exc:
            err.print(f"error: {exc.message} in {shown(where)}", markup=False)
            raise typer.Exit(1) from None
        level = charter.autonomy(agent)
    out.print(
        f"declined the proposal for `{agent}` in {shown(where)}: it stays at level {level}",
        markup=False,
    )
