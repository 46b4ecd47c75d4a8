"""`charter demo --scenario drift`: an agent's inputs drift, its refunds fail, Charter acts.

A day of ordinary work by the example policy's fleet, mostly `support-bot`'s refunds, then
an hour in which what the bot is asked to refund changes (larger amounts, other
currencies, less confidence) and the payment provider declines most of them. The monitors
are judged on the simulated clock every few seconds, as the leading `charter serve` judges
them, so the story unfolds in the ledger as it would in production: `outcomes-failing`
fires with its runbook, the `refunds-failing` breaker opens, the autonomy controller
demotes the bot by `demote-on-drift-or-failures`, its riskier refunds wait for a person,
and `inputs-drifting` fires once the recent hour holds enough drifted refunds.

The simulated day ends a minute before now, so `charter serve` on the ledger shows the
story on the fleet and agent pages (their windows are the last hour of the real clock).
The seed decides the traffic: the same seed tells the same story, times and ids aside.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from charter._cli_monitors import monitors_command
from charter._cli_store import out as cli_out
from charter.demo import REVIEWERS, audit_ledger, key_path, shown_ledger, signing_key
from charter.errors import Conflict
from charter.examples import EXAMPLE_POLICY
from charter.ledger import events
from charter.policy import Bundle, format_seconds, load_bundle
from charter.service import Charter, DecisionRecord, format_time
from charter.service._monitors import EVALUATE_EVERY
from charter.store import open_store
from charter.testing import FakeClock

__all__ = [
    "AGENT",
    "RULE",
    "STORY_KINDS",
    "DriftStory",
    "DriftTraffic",
    "StoryEntry",
    "run_drift",
    "tell_drift",
]

#: The agent whose inputs drift.
AGENT = "support-bot"
#: The autonomy rule the story expects to demote it.
RULE = "demote-on-drift-or-failures"
#: The ledger entries the story is told by, as they are recorded.
STORY_KINDS = frozenset(
    {
        events.ALERT_FIRED,
        events.ALERT_RESOLVED,
        events.AUTONOMY_CHANGED,
        events.AUTONOMY_PROPOSED,
        events.BREAKER_OPENED,
        events.BREAKER_CLOSED,
    }
)
_BASELINE = dt.timedelta(days=1)
#: Seconds between two judgements during the quiet day: nothing there comes near a line
#: (every figure is far from its threshold), so judging it every few seconds, as the
#: server would, would only cost time; the drift hour is judged every `EVALUATE_EVERY`.
_QUIET_EVERY = 600.0
#: Seconds between two rounds of the finance reviewer through the inbox.
_REVIEW_EVERY = 120.0
#: The largest refund the reviewer approves on sight while the breaker holds refunds.
_ROUTINE = 500.0
_REVIEWER = REVIEWERS["finance"][0]
_DRIFT = dt.timedelta(hours=1)
#: Requests per hour of each stream, before and during the drift: the bot's refunds
#: surge as the drift begins (a promotion abroad, say), the rest of the fleet goes on.
_RATES: Mapping[str, tuple[float, float]] = {
    "refund": (12.0, 80.0),
    "support": (6.0, 6.0),
    "trainee": (2.0, 2.0),
    "infra": (3.0, 3.0),
    "outreach": (6.0, 6.0),
}
_RATIONALES = (
    "customer reported a damaged item with photos",
    "order arrived two weeks late",
    "duplicate charge confirmed by the payment provider",
)
_DRIFTED_RATIONALES = (
    "customer of the spring promotion abroad asks for the difference back",
    "price match requested for an order paid in another currency",
    "customer says the bundle discount was not applied",
)
_DECLINES = (
    "payment provider declined: currency not enabled for this merchant account",
    "payment provider declined: amount above the captured charge",
    "payment provider declined: refund window closed",
)


class DriftTraffic:
    """The scenario's requests and how their actions turn out, from one seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.order = 50_000

    def arrivals(
        self, start: dt.datetime, drift: dt.datetime, end: dt.datetime
    ) -> Iterator[tuple[dt.datetime, str]]:
        """Every request's time and stream, in time order (Poisson arrivals per stream)."""
        streams = []
        for stream, (before, during) in _RATES.items():
            times: list[tuple[dt.datetime, str]] = []
            for low, high, rate in ((start, drift, before), (drift, end, during)):
                moment = low
                while True:
                    moment += dt.timedelta(seconds=self.rng.expovariate(rate / 3600))
                    if moment >= high:
                        break
                    times.append((moment, stream))
            streams.append(times)
        return heapq.merge(*streams)

    def request(self, stream: str, *, drifted: bool) -> dict[str, Any]:
        """The next request of `stream`; `drifted`: the bot's refunds have changed."""
        rng = self.rng
        self.order += 1
        if stream == "refund":
            return self._refund(drifted=drifted)
        if stream in ("support", "trainee"):
            agent = AGENT if stream == "support" else "support-bot-trainee"
            args: dict[str, Any]
            if rng.random() < 0.6:
                action, args = "crm.note", {"customer_id": f"c-{self.order}", "text": "called back"}
            else:
                action, args = "orders.cancel", {"order_id": f"ord-{self.order}", "shipped": False}
            return {"agent": agent, "action": action, "args": args, "context": self._calm()}
        if stream == "infra":
            args = {"service": "search", "replicas": 4}
            context = {**self._calm(), "environment": "staging"}
            return {"agent": "infra-bot", "action": "infra.scale", "args": args, "context": context}
        args = {
            "to": f"lead{self.order}@prospect.test",
            "subject": "Following up on your trial",
            "body": "Hello, thanks for trying the product.",
            "campaign": "trial-follow-up",
        }
        return {
            "agent": "outreach-bot",
            "action": "mail.send",
            "args": args,
            "context": self._calm(),
        }

    @staticmethod
    def _calm() -> dict[str, Any]:
        # Steady work (the same confidence, the same scaling): with a handful of requests
        # an hour, varying values would show as drift on the fleet page (the PSI of a
        # tiny sample) where nothing changed.
        return {"confidence": 0.9, "rationale": "routine follow-up of the customer's case"}

    def _refund(self, *, drifted: bool) -> dict[str, Any]:
        rng = self.rng
        if drifted:
            # Larger amounts (a third above 500: risk 40, which level 2 takes alone and
            # level 1 does not), other currencies, lower but not low confidence (>= 0.6,
            # so no refund needs a person before the controller acts).
            amount = min(950.0, max(101.0, rng.lognormvariate(6.0, 0.45)))
            currency = rng.choices(["USD", "EUR", "GBP"], [0.15, 0.5, 0.35])[0]
            confidence = min(0.8, max(0.6, rng.gauss(0.67, 0.04)))
            rationale = rng.choice(_DRIFTED_RATIONALES)
        else:
            amount = min(900.0, max(5.0, rng.lognormvariate(4.1, 0.8)))
            currency = rng.choices(["USD", "EUR", "GBP"], [0.7, 0.2, 0.1])[0]
            confidence = min(0.98, max(0.65, rng.gauss(0.86, 0.05)))
            rationale = rng.choice(_RATIONALES)
        return {
            "agent": AGENT,
            "action": "payments.refund",
            "args": {
                "order_id": f"ord-{self.order}",
                "amount": round(amount, 2),
                "currency": currency,
                "customer_email": f"customer{self.order}@mail.test",
            },
            "context": {
                "confidence": round(confidence, 2),
                "rationale": rationale,
                "data_sources": [{"name": "orders-db", "age_seconds": rng.choice([30, 60, 120])}],
            },
        }

    def outcome(self, action: str, *, drifted: bool) -> str | None:
        """How an action went: None when it succeeded, else its error."""
        refund = action == "payments.refund"
        if self.rng.random() >= (0.75 if drifted and refund else 0.02):
            return None
        return self.rng.choice(_DECLINES) if refund else "upstream timeout"


@dataclass(frozen=True, slots=True)
class StoryEntry:
    """One ledger entry of the story: where it is, when, what it is."""

    seq: int
    at: str
    kind: str
    payload: Mapping[str, Any]


@dataclass(slots=True)
class DriftStory:
    """What the scenario recorded, as it happened."""

    start: dt.datetime
    drift_began: dt.datetime
    end: dt.datetime
    entries: list[StoryEntry] = field(default_factory=list)
    #: The first refund routed to a person because of the demotion (its autonomy level).
    held: DecisionRecord | None = None
    decisions: int = 0
    pending: int = 0

    def first(self, kind: str, **match: Any) -> StoryEntry | None:
        """The first story entry of `kind` whose payload has the values in `match`."""
        for entry in self.entries:
            if entry.kind == kind and all(entry.payload.get(k) == v for k, v in match.items()):
                return entry
        return None

    @property
    def alert(self) -> StoryEntry | None:
        """The first alert that fired for the agent."""
        return self.first(events.ALERT_FIRED, agent=AGENT)

    @property
    def demotion(self) -> StoryEntry | None:
        """The controller's first demotion of the agent."""
        return self.first(events.AUTONOMY_CHANGED, agent=AGENT, by="controller")

    def missing(self) -> list[str]:
        """What the story needs and did not happen, in words; empty when it all did."""
        gaps = []
        if self.alert is None:
            gaps.append(f"no alert fired for {AGENT}")
        demotion = self.demotion
        if demotion is None:
            gaps.append(f"the controller did not demote {AGENT}")
        else:
            window = int(demotion.payload.get("window") or _DRIFT.total_seconds())
            if dt.datetime.fromisoformat(demotion.at) - self.drift_began > dt.timedelta(
                seconds=window
            ):
                gaps.append(
                    f"the demotion came more than its rule's window ({format_seconds(window)})"
                    " after the drift began"
                )
        if self.held is None:
            gaps.append(f"no refund of {AGENT} was routed to a person because of the demotion")
        return gaps


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep the service's warnings (a demotion, a breaker) off the terminal: the story says them.

    A handler on `charter` stops Python's last-resort printing to standard error; records
    still reach any handler an application configured on the root logger.
    """
    logger = logging.getLogger("charter")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _Teller:
    """Follows the ledger during the run and tells each story entry as it is recorded."""

    def __init__(self, charter: Charter, story: DriftStory, out: Console) -> None:
        self.charter = charter
        self.story = story
        self.out = out
        self.position = charter.store.head().seq
        self.demoted_to: int | None = None

    def when(self, at: str) -> str:
        """A time of the story: the clock, and how long after the drift began."""
        moment = dt.datetime.fromisoformat(at)
        offset = moment - self.story.drift_began
        sign = "+" if offset >= dt.timedelta(0) else "-"
        minutes, seconds = divmod(int(abs(offset).total_seconds()), 60)
        return f"[dim]{moment:%H:%M:%S}[/dim] [cyan]{sign}{minutes:02d}:{seconds:02d}[/cyan]"

    def follow(self) -> None:
        """Tell the story entries recorded since the last call."""
        store = self.charter.store
        for entry in store.entries(after=self.position, kinds=STORY_KINDS):
            told = StoryEntry(entry.seq, entry.at, entry.kind, entry.payload_object())
            self.story.entries.append(told)
            self._tell(told)
        self.position = store.head().seq

    def _tell(self, entry: StoryEntry) -> None:
        p = entry.payload
        lead = f"{self.when(entry.at)} [dim]#{entry.seq}[/dim]"
        if entry.kind == events.ALERT_FIRED:
            where = " · ".join(str(p[k]) for k in ("agent", "action") if p.get(k)) or "the fleet"
            self.out.print(
                f"{lead} [bold red]alert {p['alert']} fired[/bold red] ({p['severity']}) for "
                f"{where}: {p['figure']} is {_num(p['value'])} on {p['sample']}, "
                f"{p['condition']}\n"
                f"      runbook [underline]{p.get('runbook') or 'none'}[/underline]"
                f" · {p.get('summary', '')}"
            )
        elif entry.kind == events.ALERT_RESOLVED:
            self.out.print(
                f"{lead} alert {p['alert']} resolved for {p.get('agent') or 'the fleet'}"
            )
        elif entry.kind == events.BREAKER_OPENED:
            # A breaker that opens again after a failed trial has no window of figures.
            why = (
                f"{p.get('failures')} of {p.get('sample')} outcomes failed"
                if p.get("window") is not None
                else "again, a half-open trial failed"
            )
            self.out.print(
                f"{lead} [bold yellow]breaker {p['breaker']} opened[/bold yellow] on "
                f"{p['action']}: {why}; until {str(p.get('until', ''))[11:19]} each one "
                f"{_then(p.get('then'))}"
            )
        elif entry.kind == events.BREAKER_CLOSED:
            self.out.print(f"{lead} breaker {p['breaker']} closed on {p['action']}")
        elif entry.kind == events.AUTONOMY_CHANGED and p.get("by") == "controller":
            after = dt.datetime.fromisoformat(entry.at) - self.story.drift_began
            self.out.print(
                f"{lead} [bold magenta]the controller demoted {p['agent']}[/bold magenta] from "
                f"level {p['from']} to {p['level']} by rule [bold]{p.get('rule')}[/bold], "
                f"{_minutes(after)} after the drift began (its window: "
                f"{format_seconds(int(p.get('window') or 0))})\n      {p['reason']}"
            )
            if p["agent"] == AGENT:
                self.demoted_to = int(p["level"])
        elif entry.kind == events.AUTONOMY_CHANGED:
            self.out.print(f"{lead} {p['agent']}'s autonomy set to {p['level']} by {p.get('by')}")
        elif entry.kind == events.AUTONOMY_PROPOSED:
            self.out.print(
                f"{lead} the controller proposes level {p['level']} back for {p['agent']}"
            )

    def decided(self, record: DecisionRecord) -> None:
        """Tell the first refund the demotion sends to a person, when it comes."""
        story = self.story
        if story.held is not None or self.demoted_to is None:
            return
        decision = record.decision
        if (
            record.request.agent == AGENT
            and record.request.action == "payments.refund"
            and record.verdict.value == "require_approval"
            and decision.autonomy_level == self.demoted_to
            and any(r.code == "over_autonomy" for r in decision.reasons)
        ):
            story.held = record
            args = record.request.args
            self.out.print(
                f"{self.when(record.at)} [dim]#{record.seq}[/dim] [bold]the first refund "
                f"held for a person since the demotion[/bold]: {args['order_id']}, "
                f"{args['amount']:.2f} {args['currency']}, risk {decision.risk} → "
                f"{record.verdict.value}"
            )
            for reason in decision.reasons:
                rule = f" [dim]({reason.rule})[/dim]" if reason.rule else ""
                self.out.print(f"      · {reason.code.replace('_', ' ')}: {reason.message}{rule}")


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def _then(then: Any) -> str:
    return "needs a person" if then == "require_approval" else "is refused"


def _minutes(span: dt.timedelta) -> str:
    minutes, seconds = divmod(int(span.total_seconds()), 60)
    return f"{minutes} min {seconds:02d} s"


class _Simulation:
    """The scenario's loop: requests in time order, agents acting, finance reviewing."""

    def __init__(self, charter: Charter, clock: FakeClock, seed: int, out: Console) -> None:
        self.charter = charter
        self.clock = clock
        self.traffic = DriftTraffic(seed)
        self.out = out
        self.reviewed = float("-inf")
        self.judged = float("-inf")
        #: The arguments of refunds waiting for a person, as the agent sent them (the
        #: ledger keeps the customer's email hashed; the grant is bound to the real one).
        self.waiting: dict[str, Mapping[str, Any]] = {}

    def act(self, record: DecisionRecord, args: Mapping[str, Any], *, drifted: bool) -> str | None:
        """The agent runs an allowed (or approved) action and reports it: its error, if any."""
        grant = record.grant
        if grant is None:
            if record.approval is not None:
                self.waiting[record.id] = args
            return None
        rng = self.traffic.rng
        self.clock.advance(rng.uniform(0.2, 2.0))
        self.charter.redeem(grant.id, grant.token, args)
        self.clock.advance(rng.uniform(2.0, 30.0))
        error = self.traffic.outcome(record.request.action, drifted=drifted)
        self.charter.record_outcome(record.id, success=error is None, error=error)
        return error

    def judge(self, *, drifted: bool) -> None:
        """Judge the alert and autonomy rules when it is time, as the leading server does."""
        now = self.clock.now.timestamp()
        if now - self.judged >= (EVALUATE_EVERY if drifted else _QUIET_EVERY):
            self.judged = now
            self.charter.monitors.evaluate()

    def review(self, teller: _Teller) -> None:
        """Finance works the inbox every few minutes, until the controller steps in.

        The breaker holds every refund back; one at a time the routine ones (500 or less)
        look fine, so the reviewer approves them, and they fail at the provider too. The
        large ones wait for a second look: they are what the inbox holds at the end.
        """
        now = self.clock.now.timestamp()
        if teller.demoted_to is not None or now - self.reviewed < _REVIEW_EVERY:
            return
        self.reviewed = now
        charter = self.charter
        approved = failed = 0
        for view in charter.approvals(state="pending", limit=200):
            held = view.approval
            if held["agent"] != AGENT or float(held["args"].get("amount", 0)) > _ROUTINE:
                continue
            charter.approve(view.id, _REVIEWER, note="the order and the amount check out")
            found = charter.get_decision(str(held["decision_id"]))
            args = self.waiting.pop(str(held["decision_id"]), None)
            if found is None or args is None:  # every one was decided in this run
                continue
            approved += 1
            failed += self.act(found.record, args, drifted=True) is not None
        if approved:
            self.out.print(
                f"{teller.when(format_time(self.clock.now))} {_REVIEWER.name} (finance) approved "
                f"{approved} held refund{'s' if approved > 1 else ''} of {_ROUTINE:g} or less; "
                f"{failed} failed at the provider"
            )
            teller.follow()

    def run(self, story: DriftStory, teller: _Teller) -> None:
        """Every request of the day, in time order; the story told as it is recorded."""
        arrivals = list(self.traffic.arrivals(story.start, story.drift_began, story.end))
        charter, clock, out = self.charter, self.clock, self.out
        announced = False
        progress = Progress(
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=out,
            transient=True,
        )
        with progress:
            task = progress.add_task("simulate", total=len(arrivals))
            for n, (at, stream) in enumerate(arrivals):
                drifted = at >= story.drift_began
                if drifted and not announced:
                    announced = True
                    clock.set(max(story.drift_began, clock.now))
                    out.print(
                        f"{teller.when(format_time(clock.now))} [bold]the drift begins[/bold]: "
                        f"{AGENT}'s refunds come in larger, in EUR and GBP, stated with less "
                        "confidence, several times as many; the payment provider declines "
                        "most of them"
                    )
                clock.set(max(at, clock.now))
                self.judge(drifted=drifted)
                if drifted:
                    self.review(teller)
                teller.follow()
                request = self.traffic.request(stream, drifted=drifted and stream == "refund")
                record = charter.decide(request)
                story.decisions += 1
                teller.decided(record)
                self.act(record, request["args"], drifted=drifted)
                teller.follow()
                if n % 50 == 0:
                    progress.update(task, completed=n)
            clock.set(max(story.end, clock.now))
            self.judge(drifted=True)
            teller.follow()


def tell_drift(
    charter: Charter, clock: FakeClock, seed: int, end: dt.datetime, out: Console
) -> DriftStory:
    """Record the scenario into `charter` (on `clock`, at the day's start) and tell it.

    The day runs from a day and an hour before `end` to `end`; the drift is its last
    hour. In the drift hour the monitors are judged every `EVALUATE_EVERY` simulated
    seconds, as the leading server judges them (once per gap between two requests when
    the gap is longer: between requests only the windows' ends move); the quiet day
    before, every `_QUIET_EVERY`.
    """
    drift = end - _DRIFT
    story = DriftStory(drift - _BASELINE, drift, end)
    teller = _Teller(charter, story, out)
    # Followed by a thread, as a server's monitors are (this process does not lead: the
    # simulation judges on its own clock); reading figures then costs no catch-up each.
    charter.start_monitors(lead=False)
    _Simulation(charter, clock, seed, out).run(story, teller)
    story.pending = charter.count_approvals()
    return story


def _monitors_summary(db: str | Path, out: Console) -> None:
    """What `charter monitors --level agent` shows of the ledger now, in the story's output.

    The command prints to the command line's console: captured there, it is printed
    where the story is told (a test's console too).
    """
    with cli_out.capture() as captured:
        monitors_command(
            level="agent",
            db=db if isinstance(db, Path) else None,
            store_url=db if isinstance(db, str) else None,
        )
    out.print(Text.from_ansi(captured.get()))


def _story_table(story: DriftStory) -> Table:
    table = Table(title="the story in the ledger", title_justify="left")
    table.add_column("seq", justify="right")
    table.add_column("at (UTC)")
    table.add_column("kind")
    table.add_column("what")
    rows: list[tuple[int, str, str, str]] = []
    for entry in story.entries:
        p = entry.payload
        if entry.kind in (events.ALERT_FIRED, events.ALERT_RESOLVED):
            what = f"{p['alert']} · {p.get('agent') or 'fleet'} · runbook {p.get('runbook')}"
        elif entry.kind in (events.BREAKER_OPENED, events.BREAKER_CLOSED):
            what = f"{p['breaker']} · {p['action']}"
        elif entry.kind == events.AUTONOMY_CHANGED:
            what = f"{p['agent']} {p.get('from', '?')} → {p['level']} · {p.get('rule') or p['by']}"
        else:
            what = f"{p['agent']} → level {p['level']}"
        rows.append((entry.seq, entry.at, entry.kind, what))
    held = story.held
    if held is not None:
        args = held.request.args
        what = f"{args['order_id']} {args['amount']:.2f} {args['currency']} → {held.verdict.value}"
        rows.append((held.seq, held.at, "decision", f"{what} (over autonomy)"))
    for seq, at, kind, what in sorted(rows):
        table.add_row(str(seq), at[11:19], kind, what)
    return table


def _ledger_option(db: str | Path) -> str:
    """How the commands the demo suggests name its ledger (a URL without its password)."""
    return f"--db {db}" if isinstance(db, Path) else f"--store {shown_ledger(db)}"


def _fresh_enough(db: str | Path, start: dt.datetime) -> None:
    """Refuse a ledger holding entries after `start`: its story could only go back in time.

    Raises:
        Conflict: the ledger's last entry is later than the day the scenario records.
    """
    if isinstance(db, Path) and not db.exists():
        return
    store = open_store(db, read_only=True)
    try:
        head = store.head().seq
        last = store.entry(head) if head else None
    finally:
        store.close()
    if last is not None and last.at > format_time(start):
        raise Conflict(
            f"{shown_ledger(db)} already holds entries up to {last.at}; the drift scenario "
            f"records the day before now (from {format_time(start)}) and a ledger only grows "
            "forward in time: give it a new --db (or --store)"
        )


def run_drift(db: str | Path, seed: int, out: Console, *, end: dt.datetime | None = None) -> int:
    """Run the drift scenario into `db`; 0 when the story happened and the ledger audits.

    `db` is a SQLite file (created when missing) or a PostgreSQL URL (a database
    `charter migrate` has made ready). The simulated day ends at `end` (a minute before
    now by default, so a server started on the ledger shows it). Returns 1, saying what
    did not happen, when the alert, the demotion or the held refund is missing, or when
    the ledger does not verify or replay.

    Raises:
        Conflict: the ledger holds entries after the simulated day's start.
    """
    started = time.perf_counter()
    # On a whole minute: the monitors' buckets then fall the same way across the day
    # whenever it runs, so a seed tells the same story to the entry.
    final = end or dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(
        minutes=1
    )
    start = final - _DRIFT - _BASELINE
    _fresh_enough(db, start)
    bundle: Bundle = load_bundle(EXAMPLE_POLICY)
    where = shown_ledger(db)
    out.print(
        f"[bold]Charter demo, drift scenario[/bold]: a day of {AGENT}'s refunds, then an hour "
        "in which its inputs drift and its refunds fail"
    )
    out.print(
        f"policy  {EXAMPLE_POLICY}\nversion {bundle.version}\nledger  {where}\n"
        f"day     {format_time(start)} → {format_time(final)} (simulated; the drift from "
        f"{format_time(final - _DRIFT)[11:19]})\n"
    )
    key = signing_key(key_path(db))
    # A clock only the simulation moves (not each reading of it, as the follower's are):
    # the same seed records the same times.
    clock = FakeClock(start)
    with _quiet_logs(), Charter(bundle, db, clock=clock) as charter:
        story = tell_drift(charter, clock, seed, final, out)
        out.print(
            f"\n{story.decisions} decisions recorded in {time.perf_counter() - started:.1f}s; "
            f"{story.pending} approvals wait for a person\n"
        )
        out.print(_story_table(story))
        verified, report = audit_ledger(charter, key, out)
    out.print(f"\n[bold]charter monitors {_ledger_option(db)} --level agent[/bold]")
    _monitors_summary(db, out)
    gaps = story.missing()
    for gap in gaps:
        out.print(f"[red]the story did not happen: {gap}[/red]")
    out.print(f"\ndone in {time.perf_counter() - started:.1f}s. Next:")
    ledger = _ledger_option(db)
    for line in (
        f"charter keys create --role reviewer --label you@example.com --groups finance {ledger}",
        f"charter serve --policy {EXAMPLE_POLICY} {ledger}",
        f"  # then open http://127.0.0.1:8470/ui/fleet and /ui/agents/{AGENT}, and the inbox",
        f"charter monitors {ledger}",
        f"charter ledger show {ledger} --kind {events.AUTONOMY_CHANGED}",
        f"charter ledger show {ledger} --kind {events.ALERT_FIRED}",
        f"charter ledger verify {ledger} --public-key {key_path(db)}.pub",
    ):
        out.print(f"  {line}")
    return 0 if not gaps and verified.ok and report.ok else 1
