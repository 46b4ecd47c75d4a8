"""Monitors at the service: the rolling figures of the whole ledger, alerts, the controller.

A `Monitors` reads the ledger after its position (every process's entries, so a replica
shows the cluster's figures) and folds each entry once into a `MonitorBook`, off the
decision path: deciding costs nothing more, and the figures trail the ledger by one tick.
At each evaluation (a few seconds apart) the process that leads (one per ledger: a
PostgreSQL advisory lock; on SQLite, the server) judges the bundle's alert rules and
autonomy rules on the figures and records what they call for: `alert.fired` and
`alert.resolved` (sent to the alert's webhooks), the controller's demotions
(`autonomy.changed` naming the rule and the figures) and its proposals
(`autonomy.proposed`), which a person accepts or declines.

Opening folds the figure-bearing entries of the monitors' horizon (the longest window
they keep) and every alert and autonomy entry, so a restarted server has the figures,
the alerts firing and the controller's memory it had.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

from charter.controls import CONTROLLER, AutonomyController
from charter.errors import NotFound, RequestInvalid
from charter.ledger import NewEvent, events
from charter.monitors import AlertBook, Figures, MonitorBook, MonitorConfig, Series
from charter.policy import Bundle
from charter.service._clock import format_time
from charter.service._session import Session
from charter.service._ticker import Ticker
from charter.store import Lead, LedgerReader

__all__ = ["FIGURE_KINDS", "MEMORY_KINDS", "Monitors", "fold_ledger", "remember"]

_log = logging.getLogger("charter.monitors")

#: The kinds the figures are folded from.
FIGURE_KINDS = frozenset(
    {
        events.DECISION,
        events.APPROVAL_OPENED,
        events.APPROVAL_APPROVED,
        events.APPROVAL_DENIED,
        events.APPROVAL_EXPIRED,
        events.APPROVAL_ESCALATED,
        events.APPROVAL_MODIFIED,
        events.GRANT_REDEEMED,
        events.OUTCOME,
        events.OUTCOME_OVERDUE,
    }
)
#: The kinds of what alerts and the controller did: folded from the ledger's start.
MEMORY_KINDS = frozenset(
    {
        events.ALERT_FIRED,
        events.ALERT_RESOLVED,
        events.AUTONOMY_CHANGED,
        events.AUTONOMY_PROPOSED,
        events.AUTONOMY_DECLINED,
    }
)
_KINDS = FIGURE_KINDS | MEMORY_KINDS
#: Seconds between two evaluations of the rules, at the least.
EVALUATE_EVERY = 5.0


def _first_after(store: LedgerReader, moment: str) -> int:
    """The last ledger position before `moment`: entries are appended in time order."""
    low, high = 0, store.head().seq
    while low < high:  # the largest seq whose entry is before `moment`
        middle = (low + high + 1) // 2
        entry = store.entry(middle)
        if entry is not None and entry.at < moment:
            low = middle
        else:
            high = middle - 1
    return low


def remember(
    alerts: AlertBook,
    controller: AutonomyController,
    kind: str,
    at: str,
    payload: Mapping[str, Any],
) -> None:
    """Fold an alert or autonomy entry into what alerts and the controller remember."""
    if kind in (events.ALERT_FIRED, events.ALERT_RESOLVED):
        alerts.apply(kind, payload)
    else:
        controller.apply(kind, at, payload)


def fold_ledger(
    store: LedgerReader, config: MonitorConfig
) -> tuple[MonitorBook, AlertBook, AutonomyController, int]:
    """The figures of the ledger's last horizon, its alerts and the controller's memory.

    Returns them with the position they were folded through. Reads only: a read-only
    store is enough (`charter monitors --db` folds one this way).
    """
    book, alerts, controller = MonitorBook(config), AlertBook(), AutonomyController()
    head = store.head().seq
    for entry in store.entries(limit=head, kinds=MEMORY_KINDS):
        remember(alerts, controller, entry.kind, entry.at, entry.payload_object())
    if head:
        last = store.entry(head)
        assert last is not None
        horizon = config.horizon_seconds
        start = format_time(dt.datetime.fromisoformat(last.at) - dt.timedelta(seconds=horizon))
        after = _first_after(store, start)
        for entry in store.entries(after=after, limit=head - after, kinds=FIGURE_KINDS):
            book.apply(entry.kind, entry.at, entry.payload_object())
    return book, alerts, controller, head


class Monitors:
    """The service's monitors: figures, alerts firing, the controller's memory and acts."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._lock = threading.RLock()
        self._bundle: Bundle = session.bundle
        self._book = MonitorBook(session.bundle.monitors)
        self._alerts = AlertBook()
        self._controller = AutonomyController()
        self._position = 0
        self._evaluated = -math.inf
        self._leading: Lead | None = None
        self._lead = False
        self._ticker = Ticker("charter-monitors", self.tick)
        self._open()

    def _open(self) -> None:
        """Fold what the ledger holds: the horizon's figures, every alert and autonomy entry."""
        self._book, self._alerts, self._controller, self._position = fold_ledger(
            self._s.store, self._bundle.monitors
        )

    def _remember(self, kind: str, at: str, payload: Mapping[str, Any]) -> None:
        remember(self._alerts, self._controller, kind, at, payload)

    # -- following the ledger ----------------------------------------------------------

    def catch_up(self) -> int:
        """Fold every entry appended since the last call; how many were folded."""
        s = self._s
        with self._lock:
            if s.bundle is not self._bundle:
                self._redeploy(s.bundle)
            head = s.store.head().seq
            folded = 0
            for entry in s.store.entries(after=self._position, kinds=_KINDS):
                if entry.seq > head:
                    break
                payload = entry.payload_object()
                if entry.kind in FIGURE_KINDS:
                    self._book.apply(entry.kind, entry.at, payload)
                if entry.kind in MEMORY_KINDS:
                    self._remember(entry.kind, entry.at, payload)
                folded += 1
            self._position = max(self._position, head)
            return folded

    def _redeploy(self, bundle: Bundle) -> None:
        """A new bundle: a new book if what the monitors check changed (refolded)."""
        before = self._bundle.monitors
        self._bundle = bundle
        if bundle.monitors != before:
            self._book = MonitorBook(bundle.monitors)
            self._position = 0
            self._alerts = AlertBook()
            self._controller = AutonomyController()
            self._open()

    def tick(self) -> None:
        """Catch up; then, every few seconds and if this process leads, judge the rules."""
        self.catch_up()
        now = self._s.clock()
        stamp = now.timestamp()
        if stamp - self._evaluated < EVALUATE_EVERY:
            return
        if self._lead and self._leads():
            self._evaluated = stamp
            self.evaluate(now)

    def _leads(self) -> bool:
        """Whether this process is the one that judges the rules (taking the lead if free)."""
        if self._leading is not None and not self._leading.closed:
            return True
        self._leading = self._s.store.lead("charter-monitors")
        return self._leading is not None

    def start(self, interval: float = 1.0, *, lead: bool = True) -> None:
        """Follow the ledger every `interval` seconds; with `lead`, judge rules if leading."""
        self._lead = lead
        self._ticker.start(interval)

    def stop(self) -> None:
        """Stop following, and give the lead up."""
        self._ticker.stop()
        if self._leading is not None:
            self._leading.close()
            self._leading = None

    # -- reading -------------------------------------------------------------------------

    def _fresh(self) -> None:
        """Catch up first when nothing follows the ledger (monitors not started)."""
        if not self._ticker.running:
            self.catch_up()

    def figures(
        self,
        *,
        agent: str | None = None,
        action: str | None = None,
        level: str = "action",
        window: int | None = None,
        now: dt.datetime | None = None,
    ) -> list[Figures]:
        """The figures of each group at `level` over `window` seconds (see `MonitorBook`).

        Raises:
            RequestInvalid: an unknown level, or a window longer than the book keeps.
        """
        if level not in ("model", "action", "agent", "fleet"):
            raise RequestInvalid("level", "`level` is one of model, action, agent, fleet")
        self._fresh()
        with self._lock:
            try:
                return self._book.figures(
                    now or self._s.clock(),
                    agent=agent,
                    action=action,
                    window=window,
                    level=level,  # type: ignore[arg-type]
                )
            except ValueError as exc:
                raise RequestInvalid("window", str(exc)) from None

    def series(
        self,
        agent: str,
        action: str | None = None,
        *,
        points: int = 60,
        step_seconds: int | None = None,
        now: dt.datetime | None = None,
    ) -> Series:
        """The agent's figures over time, for charts (see `MonitorBook.series`)."""
        self._fresh()
        with self._lock:
            try:
                return self._book.series(
                    now or self._s.clock(), agent, action, points=points, step_seconds=step_seconds
                )
            except ValueError as exc:
                raise RequestInvalid("step", str(exc)) from None

    def agents(self) -> list[str]:
        """The agents the figures know, by id."""
        self._fresh()
        with self._lock:
            return self._book.agents()

    def alerts(self) -> list[Mapping[str, Any]]:
        """The alerts firing now: each one's `alert.fired` payload."""
        self._fresh()
        with self._lock:
            return self._alerts.firing()

    def proposals(self) -> list[Mapping[str, Any]]:
        """The controller's open proposals to give agents their level back."""
        self._fresh()
        with self._lock:
            return self._controller.proposals()

    def demotion(self, agent: str) -> Mapping[str, Any] | None:
        """The controller's demotion of `agent` still standing, as JSON, if any."""
        self._fresh()
        with self._lock:
            found = self._controller.demotion(agent)
        return None if found is None else found.to_json()

    # -- judging -------------------------------------------------------------------------

    def evaluate(self, now: dt.datetime | None = None) -> list[NewEvent]:
        """Judge the alert and autonomy rules on the figures now; record what they call for.

        Returns the entries recorded. Called by the leading process's ticker; tests and
        simulations call it with their own `now`.
        """
        moment = now or self._s.clock()
        self.catch_up()  # what another leader recorded counts first
        return [*self._judge_alerts(moment), *self._judge_autonomy(moment)]

    def _judge_alerts(self, now: dt.datetime) -> list[NewEvent]:
        bundle = self._s.bundle
        rules = bundle.alerts
        if not rules and not len(self._alerts):
            return []
        figures: dict[str, list[Figures]] = {}
        cache: dict[tuple[str, int], list[Figures]] = {}
        for rule in rules:
            key = (rule.level, rule.window_seconds)
            if key not in cache:
                cache[key] = self._safe_figures(now, level=rule.level, window=rule.window_seconds)
            figures[rule.id] = cache[key]
        with self._lock:
            changes = list(self._alerts.transitions(rules, figures, format_time(now)))
        out = []
        for kind, payload in changes:
            event = NewEvent(kind, format_time(now), payload)
            self._record(event)
            out.append(event)
            self._tell(bundle, kind, payload)
        return out

    def _safe_figures(self, now: dt.datetime, **query: Any) -> list[Figures]:
        try:
            return self.figures(now=now, **query)
        except RequestInvalid:  # a window longer than the book keeps: judged on what it has
            return self.figures(now=now, level=query["level"])

    def _judge_autonomy(self, now: dt.datetime) -> list[NewEvent]:
        s = self._s
        bundle = s.bundle
        rules = bundle.autonomy_rules
        if not rules or not bundle.levels:
            return []
        lowest = min(bundle.levels)
        horizon = self._book.config.horizon_seconds
        out: list[NewEvent] = []
        for agent in self.agents():
            profile = s.state.profile(agent, bundle.agents)
            if profile is None:
                continue
            judging = [r for r in rules if r.judges(agent, profile.role)]
            if not judging:
                continue
            level = s.state.autonomy.get(agent, profile.autonomy)
            demoted = False
            for rule in judging:
                since = self._controller.judged_since(agent, now, rule.window_seconds)
                window = min(max(math.ceil((now - since).total_seconds()), 1), horizon)
                (figures,) = self.figures(agent=agent, level="agent", window=window, now=now)
                payload = self._controller.demote(rule, agent, level, lowest, figures)
                if payload is None:
                    continue
                event = events.autonomy_changed(
                    format_time(now),
                    agent,
                    payload["level"],
                    payload["reason"],
                    CONTROLLER,
                    **{k: payload[k] for k in ("rule", "from", "figures", "window")},
                )
                self._record(event, state=True)
                _log.warning(
                    "demoted %s to level %s: %s", agent, payload["level"], payload["reason"]
                )
                out.append(event)
                demoted = True
                break  # one demotion per agent per evaluation: the next judges anew
            if demoted:
                continue
            clean = self._controller.clean_since(agent)
            if clean is None:
                continue
            window = min(max(math.ceil((now - clean).total_seconds()), 1), horizon)
            (figures,) = self.figures(agent=agent, level="agent", window=window, now=now)
            proposal = self._controller.propose(agent, level, judging, figures)
            if proposal is not None:
                event = NewEvent(events.AUTONOMY_PROPOSED, format_time(now), proposal)
                self._record(event)
                out.append(event)
        return out

    def _record(self, event: NewEvent, *, state: bool = False) -> None:
        """Commit `event` and fold it here; `state`: the session's state changes with it."""
        s = self._s
        with s.lock:
            if state:
                s.record(event)
            else:
                s.writer.submit(event, None, awaited=True).result()
        with self._lock:
            self._remember(event.kind, event.at, event.payload)

    def _tell(self, bundle: Bundle, kind: str, payload: Mapping[str, Any]) -> None:
        """Send an alert's change to its webhooks; never raises."""
        notifier = self._s.notifier
        if notifier is None or not hasattr(notifier, "notify_alert"):
            return
        hooks = bundle.alert_webhooks(str(payload["alert"]))
        if not hooks:
            return
        runbook = payload.get("runbook")
        text = bundle.runbooks.get(runbook) if isinstance(runbook, str) else None
        try:
            notifier.notify_alert(hooks, kind, dict(payload), runbook=text)
        except Exception:  # telling people must never stop the judging
            _log.exception("could not queue the %s notification of %s", kind, payload["alert"])

    # -- people ------------------------------------------------------------------------

    def accept(self, agent: str, *, by: str) -> Mapping[str, Any]:
        """Accept the controller's proposal for `agent`: it gets the proposed level back.

        Raises:
            NotFound: no proposal for `agent` is open.
        """
        proposal = self._open_proposal(agent)
        s = self._s
        profile = s.state.profile(agent, s.bundle.agents)
        level = int(proposal["level"])
        restored = profile is not None and level == profile.autonomy
        reason = f"accepted the controller's proposal: {proposal.get('reason', '')}".strip()
        event = events.autonomy_changed(s.stamp(), agent, None if restored else level, reason, by)
        self._record(event, state=True)
        return dict(event.payload)

    def decline(self, agent: str, *, by: str, reason: str) -> Mapping[str, Any]:
        """Decline the controller's proposal for `agent`; it may propose again later.

        Raises:
            NotFound: no proposal for `agent` is open.
        """
        proposal = self._open_proposal(agent)
        payload = {"agent": agent, "level": proposal["level"], "reason": reason, "by": by}
        event = NewEvent(events.AUTONOMY_DECLINED, self._s.stamp(), payload)
        self._record(event)
        return payload

    def _open_proposal(self, agent: str) -> Mapping[str, Any]:
        self.catch_up()
        with self._lock:
            proposal = self._controller.proposal(agent)
        if proposal is None:
            raise NotFound(f"no proposal for agent `{agent}` is open")
        return proposal
