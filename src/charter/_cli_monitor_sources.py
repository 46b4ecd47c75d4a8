"""What `charter monitors`, `charter alerts` and `charter autonomy` read: a store or a server.

On a store the reading commands open it read-only (a missing file is refused, never
created) and fold the ledger as a restarted server would (`fold_ledger`); the figures are
those at the ledger's last entry, not at the wall clock, so an old ledger shows the same
figures every time. Alerts and proposals are what the ledger records: the server that
leads judges the rules, these commands judge nothing. Over `--server` they ask the API
(`GET /v1/monitors`, `/v1/monitors/series`, `/v1/alerts`, `/v1/autonomy/proposals`,
`/v1/agents/{id}`), whose roles decide who may.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import typer

from charter._cli_server import ask_server, one_place
from charter._cli_store import err, open_reading, shown, target
from charter.controls import AutonomyController, ServiceState
from charter.errors import CharterError
from charter.ledger import events
from charter.monitors import AlertBook, Level
from charter.policy import Bundle
from charter.service import fold_ledger, load_recorded_bundle
from charter.store import LedgerReader

__all__ = [
    "LEVELS",
    "TREND_CELLS",
    "Gathered",
    "agent_over_http",
    "deployed_bundle",
    "firing_alerts",
    "from_server",
    "from_store",
    "ledger_state",
    "open_proposals",
]

#: The rows `--level` may ask for, finest first.
LEVELS = ("model", "action", "agent", "fleet")
#: The sparkline's cells at the most: the window is cut into this many steps.
TREND_CELLS = 12
#: A series step is at least a minute (what the API accepts), in whole buckets.
_MIN_STEP = 60
_STATE_KINDS = frozenset({events.AUTONOMY_CHANGED, events.AGENT_UPDATED, events.POLICY_DEPLOYED})
_AUTONOMY_KINDS = frozenset(
    {events.AUTONOMY_CHANGED, events.AUTONOMY_PROPOSED, events.AUTONOMY_DECLINED}
)
_ALERT_KINDS = frozenset({events.ALERT_FIRED, events.ALERT_RESOLVED})
#: The counts that say a group did something in the window (figures of a slice the
#: horizon still holds but that was quiet in the window are not shown).
_ACTIVITY = ("decisions", "outcomes", "approvals_ended", "grants_redeemed")


def ledger_state(store: LedgerReader, head: int) -> ServiceState:
    """Autonomy overrides, the agent registry and the deployed version, through `head`."""
    found = store.entries(kinds=_STATE_KINDS)
    return ServiceState.fold(itertools.takewhile(lambda e: e.seq <= head, found))


def deployed_bundle(store: LedgerReader, state: ServiceState, place: str) -> Bundle | None:
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


def fold_controller(store: LedgerReader) -> AutonomyController:
    """The autonomy controller's memory (demotions, proposals, declines) from the ledger."""
    controller = AutonomyController()
    for entry in store.entries(kinds=_AUTONOMY_KINDS):
        controller.apply(entry.kind, entry.at, entry.payload_object())
    return controller


@dataclass(frozen=True, slots=True)
class Gathered:
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


def from_store(
    where: str | Path, agent: str | None, action: str | None, level: str, window: int | None
) -> Gathered:
    """The figures, trends and agents' levels at the ledger's last entry, from a store."""
    place = shown(where)
    store = open_reading(where)
    try:
        head = store.head().seq
        if not head:
            return Gathered(place, None, [], [], {}, empty=f"the ledger {place} is empty")
        state = ledger_state(store, head)
        bundle = deployed_bundle(store, state, place)
        if bundle is None:
            return Gathered(
                place, None, [], [], {}, empty=f"no policy was ever deployed in {place}"
            )
        book, _alerts, controller, folded = fold_ledger(store, bundle.monitors)
        last = store.entry(folded)
        assert last is not None  # `folded` is a position the ledger held
        at = last.at
    finally:
        store.close()
    try:
        grouped = cast("Level", level)  # one of `LEVELS`: `monitors_command` checked it
        found = book.figures(at, agent=agent, action=action, window=window, level=grouped)
    except ValueError as exc:
        err.print(f"error: --window: {exc}", markup=False)
        raise typer.Exit(2) from None
    rows = [f.to_json() for f in found]
    rows = [f for f in rows if _active(f)]
    if not rows:
        return Gathered(place, at, [], [], {})
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
        demotion = controller.demotion(name)
        agents[name] = {
            "agent": name,
            "autonomy": state.autonomy.get(name, base),
            "profile_autonomy": base,
            "demotion": None if demotion is None else demotion.to_json(),
            "proposal": controller.proposal(name),
        }
    # No row of an agent (the fleet): no series was drawn, so no step is said.
    return Gathered(place, at, rows, series, agents, step if agents else None)


def agent_over_http(server: str, key: str | None, agent: str) -> dict[str, Any] | None:
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


def from_server(
    server: str,
    key: str | None,
    agent: str | None,
    action: str | None,
    level: str,
    window: int | None,
) -> Gathered:
    """The same as `from_store`, asked of a running server."""
    params = {"agent": agent, "action": action, "level": level, "window": window}
    found = ask_server(server, key, "GET", "/v1/monitors", params=params)
    rows = [f for f in found.get("figures", []) if _active(f)]
    if not rows:
        return Gathered(server, None, [], [], {})
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
        seen = agent_over_http(server, key, name)
        agents[name] = {
            "agent": name,
            "autonomy": None if seen is None else seen.get("autonomy_in_force"),
            "profile_autonomy": None if seen is None else seen.get("autonomy"),
            "demotion": None if seen is None else seen.get("demotion"),
            "proposal": open_.get(name),
        }
    return Gathered(server, at, rows, series, agents, step)


# -- alerts and proposals -----------------------------------------------------------------


def _listed(
    server: str | None,
    key: str | None,
    db: Path | None,
    store_url: str | None,
    path: str,
    field: str,
    fold: Callable[[LedgerReader], list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], str]:
    """A list the API answers at `path` (under `field`), or the same folded from a store.

    Returns it with the place it came from, as messages name it.
    """
    one_place(server, db, store_url)
    if server is not None:
        return list(ask_server(server, key, "GET", path).get(field, [])), server
    where: str | Path = target(db, store_url)
    store = open_reading(where)
    try:
        return fold(store), shown(where)
    finally:
        store.close()


def _fold_alerts(store: LedgerReader) -> list[dict[str, Any]]:
    book = AlertBook()
    for entry in store.entries(kinds=_ALERT_KINDS):
        book.apply(entry.kind, entry.payload_object())
    return [dict(a) for a in book.firing()]


def firing_alerts(
    server: str | None, key: str | None, db: Path | None, store_url: str | None
) -> tuple[list[dict[str, Any]], str]:
    """The alerts firing (as `GET /v1/alerts` gives them), and where they were read."""
    return _listed(server, key, db, store_url, "/v1/alerts", "alerts", _fold_alerts)


def open_proposals(
    server: str | None, key: str | None, db: Path | None, store_url: str | None
) -> tuple[list[dict[str, Any]], str]:
    """The controller's open proposals (as `GET /v1/autonomy/proposals`), and where."""
    return _listed(
        server,
        key,
        db,
        store_url,
        "/v1/autonomy/proposals",
        "proposals",
        lambda store: [dict(p) for p in fold_controller(store).proposals()],
    )
