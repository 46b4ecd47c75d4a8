"""`charter demo`: a simulated fleet of agents run through the example policy.

The traffic is seeded pseudo-randomness and the clock is simulated, so the same seed gives
the same ledger content (ids aside); the point is to show, in seconds, what Charter does
with a realistic mix: routine actions allowed, risky ones sent to people, bad ones refused,
an agent halted mid-run, and then the ledger verified and replayed.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from charter.errors import CharterError
from charter.examples import EXAMPLE_POLICY
from charter.ledger import (
    ReplayReport,
    StateCheck,
    VerifyReport,
    generate_signing_key,
    load_private_key,
    private_key_pem,
    public_key_pem,
)
from charter.policy import Bundle, bundle_from_content, load_bundle
from charter.service import Charter, DecisionRecord, Principal

__all__ = [
    "REVIEWERS",
    "Fleet",
    "audit_ledger",
    "key_path",
    "review",
    "run_demo",
    "shown_ledger",
    "signing_key",
    "what_if_bundle",
]

_START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)  # a Monday morning
_BATCH = 250
_RISK_BUCKETS = ((0, 0), (1, 20), (21, 45), (46, 60), (61, 90), (91, 10_000))


class Fleet:
    """Generates the requests of four agents: two support bots, infrastructure, outreach."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.order = 10_000

    def _context(self, *, env: str | None = None) -> dict[str, Any]:
        rng = self.rng
        context: dict[str, Any] = {
            "confidence": round(min(1.0, max(0.05, rng.gauss(0.8, 0.15))), 2)
        }
        if rng.random() < 0.9:
            context["rationale"] = rng.choice(
                [
                    "customer reported a damaged item with photos",
                    "order arrived two weeks late",
                    "duplicate charge confirmed by the payment provider",
                    "traffic rising ahead of the evening peak",
                    "error rate above SLO after the last deploy",
                    "customer opted in to product updates",
                ]
            )
        if env is not None:
            context["environment"] = env
        return context

    def support(self, agent: str) -> dict[str, Any]:
        """A support bot's request: mostly refunds, some cancellations and notes."""
        rng = self.rng
        self.order += 1
        roll = rng.random()
        if roll < 0.6:
            amount = round(rng.lognormvariate(4.2, 1.1), 2)
            context = self._context()
            age = rng.choice([30, 60, 120, 600]) if rng.random() > 0.04 else 7200
            context["data_sources"] = [{"name": "orders-db", "age_seconds": age}]
            args: dict[str, Any] = {
                "order_id": f"ord-{self.order}",
                "amount": amount,
                "currency": rng.choice(["USD", "USD", "EUR", "GBP"]),
                "customer_email": f"customer{self.order}@mail.test",
            }
            if rng.random() < 0.01:
                args["currency"] = "JPY"  # a contract the agent gets wrong now and then
            return {"agent": agent, "action": "payments.refund", "args": args, "context": context}
        if roll < 0.85:
            return {
                "agent": agent,
                "action": "orders.cancel",
                "args": {"order_id": f"ord-{self.order}", "shipped": rng.random() < 0.2},
                "context": self._context(),
            }
        if roll < 0.98:
            return {
                "agent": agent,
                "action": "crm.note",
                "args": {"customer_id": f"c-{self.order}", "text": "called back about the order"},
                "context": self._context(),
            }
        # Now and then a support bot wanders outside its envelope.
        return {
            "agent": agent,
            "action": "infra.restart",
            "args": {"service": "checkout"},
            "context": {},
        }

    def infra(self) -> dict[str, Any]:
        """The infrastructure bot: scaling, restarts, the odd migration."""
        rng = self.rng
        env = "prod" if rng.random() < 0.6 else "staging"
        service = rng.choice(["checkout", "search", "catalog", "payments-api"])
        roll = rng.random()
        if roll < 0.55:
            replicas = rng.choice([0, 2, 4, 8, 12, 24, 64]) if rng.random() < 0.9 else 120
            args: dict[str, Any] = {"service": service, "replicas": replicas}
            return {
                "agent": "infra-bot",
                "action": "infra.scale",
                "args": args,
                "context": self._context(env=env),
            }
        if roll < 0.9:
            return {
                "agent": "infra-bot",
                "action": "infra.restart",
                "args": {"service": service},
                "context": self._context(env=env),
            }
        args = {"database": "orders", "migration": f"00{rng.randint(40, 99)}_change"}
        if rng.random() < 0.3:
            args["destructive"] = True
        return {
            "agent": "infra-bot",
            "action": "db.migrate",
            "args": args,
            "context": self._context(env=env),
        }

    def outreach(self) -> dict[str, Any]:
        """The outreach bot: single mails, now and then a campaign."""
        rng = self.rng
        self.order += 1
        if rng.random() < 0.88:
            args: dict[str, Any] = {
                "to": f"lead{self.order}@prospect.test",
                "subject": "Following up on your trial",
                "body": "Hello, thanks for trying the product.",
            }
            if rng.random() < 0.7:
                args["campaign"] = "trial-follow-up"
            return {
                "agent": "outreach-bot",
                "action": "mail.send",
                "args": args,
                "context": self._context(),
            }
        return {
            "agent": "outreach-bot",
            "action": "mail.bulk_send",
            "args": {
                "segment": "trial-users",
                "recipients": rng.choice([800, 2500, 9000]),
                "subject": "What's new",
            },
            "context": self._context(),
        }

    def next(self) -> dict[str, Any]:
        """The next request of the fleet."""
        roll = self.rng.random()
        if roll < 0.4:
            return self.support("support-bot")
        if roll < 0.55:
            return self.support("support-bot-trainee")
        if roll < 0.75:
            return self.infra()
        return self.outreach()


def what_if_bundle(bundle: Bundle) -> Bundle:
    """The example policy with finance approving refunds above 500 instead of 1,000."""
    content = copy.deepcopy(dict(bundle.content))
    for rule in content["files"]["rules.yaml"]["rules"]:
        if rule["id"] == "large-refunds-need-finance":
            rule["when"] = "args.amount > 500"
            rule["reason"] = "refunds above 500 are approved by finance"
    return bundle_from_content(content)


#: The demo's reviewers: two people per group, so a two-person quorum can be met.
REVIEWERS: dict[str, tuple[Principal, ...]] = {
    group: tuple(
        Principal(f"demo-{group}-{n}", "reviewer", name=f"{who}@example.com", groups=(group,))
        for n, who in enumerate(people)
    )
    for group, people in {
        "finance": ("alice", "bruno"),
        "finance-managers": ("carol", "dmitri"),
        "ops": ("olga", "omar"),
        "sre": ("sam", "sofia"),
        "marketing": ("mia", "marc"),
    }.items()
}

_DENIALS = (
    "the customer already received a replacement",
    "not during the change freeze",
    "duplicate of a request handled this morning",
    "the evidence does not support it",
)


def _modified(args: dict[str, Any], action: str) -> dict[str, Any] | None:
    """A reviewer's typical change to a request, or None when there is none to make."""
    if action == "payments.refund" and isinstance(args.get("amount"), int | float):
        return {**args, "amount": round(min(float(args["amount"]), 900.0) / 2, 2)}
    if action == "infra.scale" and args.get("replicas") == 0:
        return {**args, "replicas": 1}
    return None


def review(charter: Charter, rng: random.Random) -> Counter[str]:
    """The demo's reviewers work through the inbox: approve, deny, modify or leave.

    Returns how many of each step they took.
    """
    steps: Counter[str] = Counter()
    for view in charter.approvals(state="pending", limit=1000):
        approval = view.approval
        people = [p for g in approval["route"]["groups"] for p in REVIEWERS.get(g, ())]
        if not people:
            continue
        roll = rng.random()
        try:
            if roll < 0.55:
                for person in people[: approval["required"]]:
                    charter.approve(view.id, person, note="checked against the runbook")
                steps["approved"] += 1
            elif roll < 0.72:
                charter.deny(view.id, people[0], reason=rng.choice(_DENIALS))
                steps["denied"] += 1
            elif roll < 0.8 and (new := _modified(dict(approval["args"]), approval["action"])):
                charter.modify(view.id, people[0], new, note="a smaller change first")
                for person in people[1 : approval["required"]]:
                    charter.approve(view.id, person)
                steps["modified"] += 1
        except CharterError:  # e.g. a modification the policy refuses: left for later
            continue
    return steps


def _clock(start: dt.datetime, rng: random.Random) -> Callable[[], dt.datetime]:
    moment = [start]

    def tick() -> dt.datetime:
        moment[0] += dt.timedelta(seconds=rng.expovariate(1 / 6))
        return moment[0]

    return tick


def _summary(records: list[DecisionRecord], out: Console) -> None:
    verdicts = ("allow", "require_approval", "escalate", "deny")
    by_agent: dict[str, Counter[str]] = {}
    reasons: Counter[str] = Counter()
    risks: list[int] = []
    for record in records:
        by_agent.setdefault(record.request.agent, Counter())[record.verdict.value] += 1
        risks.append(record.decision.risk)
        for reason in record.decision.reasons:
            if reason.code != "allowed":
                reasons[f"{reason.code}" + (f" · {reason.rule}" if reason.rule else "")] += 1
    table = Table(title="verdicts by agent", title_justify="left")
    table.add_column("agent")
    for v in verdicts:
        table.add_column(v, justify="right")
    table.add_column("total", justify="right")
    totals: Counter[str] = Counter()
    for agent, counts in sorted(by_agent.items()):
        totals.update(counts)
        table.add_row(agent, *(str(counts[v]) for v in verdicts), str(sum(counts.values())))
    table.add_row(
        "[bold]all[/bold]",
        *(f"[bold]{totals[v]}[/bold]" for v in verdicts),
        f"[bold]{len(records)}[/bold]",
    )
    out.print(table)
    top = Table(title="top reasons (other than allowed)", title_justify="left")
    top.add_column("reason · rule")
    top.add_column("count", justify="right")
    for name, count in reasons.most_common(8):
        top.add_row(name, str(count))
    out.print(top)
    dist = Table(title="risk distribution", title_justify="left")
    dist.add_column("risk")
    dist.add_column("decisions", justify="right")
    dist.add_column("")
    for low, high in _RISK_BUCKETS:
        n = sum(1 for r in risks if low <= r <= high)
        label = f"{low}" if low == high else (f"{low}-{high}" if high < 10_000 else f"> {low - 1}")
        dist.add_row(label, str(n), "█" * max(0, round(40 * n / max(1, len(risks)))))
    out.print(dist)


def _approvals_summary(
    charter: Charter, reviewed: Counter[str], fired: list[Any], out: Console
) -> None:
    table = Table(title="approvals (reviewers simulated)", title_justify="left")
    table.add_column("step")
    table.add_column("count", justify="right")
    for step in ("approved", "denied", "modified"):
        table.add_row(step, str(reviewed[step]))
    escalated = sum(1 for v in fired if v.state == "pending")
    table.add_row("escalated to the next tier at their SLA", str(escalated))
    table.add_row("expired at their SLA (refused)", str(len(fired) - escalated))
    table.add_row("[bold]pending now[/bold]", f"[bold]{charter.count_approvals()}[/bold]")
    out.print(table)


def key_path(db: str | Path) -> Path:
    """Where the demo keeps its checkpoint key: beside a ledger file, else here."""
    if isinstance(db, Path):
        return db.with_name(db.stem + "-key.pem")
    return Path("charter-demo-key.pem")


def shown_ledger(db: str | Path) -> str:
    """The ledger as the demo names it: a database URL without its password."""
    if isinstance(db, Path):
        return str(db)
    return make_url(db).render_as_string(hide_password=True)


def signing_key(path: Path) -> Ed25519PrivateKey:
    """The demo's checkpoint key, kept (at `path`) so later runs sign with it too."""
    if path.exists():
        return load_private_key(path.read_bytes())
    key = generate_signing_key()
    path.touch(mode=0o600)
    path.write_bytes(private_key_pem(key))
    path.with_name(path.name + ".pub").write_bytes(public_key_pem(key.public_key()))
    return key


def _run_fleet(
    charter: Charter, fleet: Fleet, count: int, halt: tuple[int, int], out: Console
) -> tuple[list[DecisionRecord], Counter[str]]:
    """Decide the fleet's traffic in batches, reviewers working the inbox in between.

    The outreach bot is halted at request `halt[0]` and resumed at `halt[1]`.
    """
    records: list[DecisionRecord] = []
    reviewed: Counter[str] = Counter()
    progress = Progress(
        TextColumn("deciding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    )
    with progress:
        task = progress.add_task("decide", total=count)
        done = 0
        while done < count:
            boundary = min([b for b in halt if b > done] or [count])
            size = min(_BATCH, boundary - done, count - done)
            records.extend(charter.decide_many([fleet.next() for _ in range(size)]))
            reviewed.update(review(charter, fleet.rng))
            done += size
            progress.update(task, completed=done)
            if done == halt[0]:
                charter.halt(
                    "agent",
                    "outreach-bot",
                    reason="complaint spike from recipients",
                    by="demo-operator",
                )
            elif done == halt[1]:
                charter.resume("agent", "outreach-bot", by="demo-operator")
    return records, reviewed


def _state_note(check: StateCheck | None) -> str:
    """What the demo says of the recorded-state check after its replay line."""
    if check is None:
        return ""
    if not check.differing:
        return "; each recorded the state the ledger before it gives"
    return (
        f"; [yellow]{check.differing} recorded a state the ledger before it does not give[/yellow]"
    )


def audit_ledger(
    charter: Charter, key: Ed25519PrivateKey, out: Console
) -> tuple[VerifyReport, ReplayReport]:
    """Sign a checkpoint, verify the ledger against it and replay it; say how each went."""
    signed = charter.checkpoint(key)
    t = time.perf_counter()
    verified = charter.verify(key.public_key())
    out.print(
        "\nledger verify: "
        + (
            f"[green]ok[/green], {verified.count} entries in {time.perf_counter() - t:.2f}s, "
            f"matching the checkpoint signed by key {signed.key_id[:16]}"
            if verified.ok
            else f"[red]BROKEN[/red] {verified.problem}"
        )
    )
    t = time.perf_counter()
    report = charter.replay()
    out.print(
        "replay under recorded versions: "
        + (
            f"[green]ok[/green], {report.total} decisions reproduced exactly "
            f"in {time.perf_counter() - t:.2f}s{_state_note(report.state)}"
            if report.ok
            else f"[red]{report.changed} differ, {report.error_count} failed[/red]"
        )
    )
    return verified, report


def run_demo(db: str | Path, count: int, seed: int, out: Console) -> int:
    """Run the demo into `db`; return the exit code (0 when the ledger verifies and replays).

    `db` is a SQLite file (created when missing) or a PostgreSQL URL (a database
    `charter migrate` has made ready). A ledger that already holds entries is added to,
    its simulated morning starting after the last one.
    """
    started = time.perf_counter()
    bundle = load_bundle(EXAMPLE_POLICY)
    fleet = Fleet(seed)
    start = _START
    where = shown_ledger(db)
    if isinstance(db, str) or db.exists():
        # Opened on the simulated clock: a store that has no deployment yet (a database
        # fresh from `charter migrate`) records it at the demo's start, not at today's
        # time, so the simulated morning starts there too.
        with Charter(bundle, db, clock=lambda: start) as existing:
            head = existing.store.head()
            if head.seq:
                last = next(iter(existing.store.entries(after=head.seq - 1)))
                start = dt.datetime.fromisoformat(last.at) + dt.timedelta(minutes=1)
    out.print(f"[bold]Charter demo[/bold]: {count} requests from a fleet of 4 agents")
    out.print(f"policy  {EXAMPLE_POLICY}\nversion {bundle.version}\nledger  {where}\n")
    key_file = key_path(db)
    key = signing_key(key_file)
    halt_at, resume_at = int(count * 0.6), int(count * 0.65)
    with Charter(bundle, db, clock=_clock(start, fleet.rng)) as charter:
        records, reviewed = _run_fleet(charter, fleet, count, (halt_at, resume_at), out)
        decided = time.perf_counter() - started
        out.print(
            f"{count} decisions recorded in {decided:.1f}s "
            f"(outreach-bot was halted for {resume_at - halt_at} requests mid-run)\n"
        )
        _summary(records, out)
        fired = charter.fire_due()  # SLAs that ran out during the simulated morning
        _approvals_summary(charter, reviewed, fired, out)
        verified, report = audit_ledger(charter, key, out)
        what_if = charter.replay(what_if_bundle(bundle))
        moves = (
            ", ".join(f"{a}→{b}: {n}" for (a, b), n in what_if.transitions.most_common()) or "none"
        )
        out.print(
            "what if finance approved refunds above 500 instead of 1,000? "
            f"{what_if.changed} decisions would change ({moves})"
        )
    out.print(f"\ndone in {time.perf_counter() - started:.1f}s. Next:")
    ledger = f"--db {db}" if isinstance(db, Path) else f"--store {where}"
    for line in (
        f"charter serve --policy {EXAMPLE_POLICY} {ledger}   # then open http://127.0.0.1:8470/ui/",
        f"charter ledger show {ledger} -n 5",
        f"charter ledger verify {ledger} --public-key {key_file}.pub",
        f"charter replay {ledger}",
        "charter init my-policy && charter check my-policy && charter test my-policy",
    ):
        out.print(f"  {line}")
    return 0 if verified.ok and report.ok else 1
