"""The embedded `Charter`: decide, record, keep state across restarts, audit, replay."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from _postgres import stored_bytes
from _raw import drop_triggers, raw
from charter import Bundle, Charter, RequestInvalid, Verdict, bundle_from_content, load_bundle
from charter.cli import app
from charter.examples import EXAMPLE_POLICY
from charter.store import BundleConflictError
from charter.testing import FakeClock, make_charter, sequential_ids

EMAIL = "jane.private.doe@mail.test"
RECIPIENT = "sam.secret.person@inbox.test"
BODY = "Dear Sam, your diagnosis number is 4471-CONFIDENTIAL."


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle(EXAMPLE_POLICY)


@pytest.fixture
def db(store_target: str) -> str:
    return store_target


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(tick=1)


@pytest.fixture
def charter(bundle: Bundle, db: Path, clock: FakeClock) -> Iterator[Charter]:
    with make_charter(bundle, db, clock=clock) as opened:
        yield opened


def refund(amount: float = 40, n: int = 1, **args: Any) -> dict[str, Any]:
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": f"ord-{n}", "amount": amount, "currency": "USD", **args},
        "context": {"confidence": 0.9, "rationale": "customer received a damaged item"},
    }


def mail(**args: Any) -> dict[str, Any]:
    return {
        "agent": "outreach-bot",
        "action": "mail.send",
        "args": {"to": RECIPIENT, "subject": "Hi", "body": BODY, "campaign": "winback", **args},
        "context": {"confidence": 0.9, "rationale": "customer opted in to winback mails"},
    }


def payloads(charter: Charter, kind: str = "decision") -> list[dict[str, Any]]:
    return [e.payload_object() for e in charter.store.entries(kinds=(kind,))]


def db_bytes(db: str | Path) -> bytes:
    """What the store holds on disk: the SQLite file and its WAL, or a database's rows."""
    if "://" in str(db):
        return stored_bytes(str(db))
    db = Path(db)
    files = [db, db.with_name(db.name + "-wal")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def stricter(bundle: Bundle) -> Bundle:
    """The example with finance approving refunds above 500 instead of 1,000."""
    content = copy.deepcopy(dict(bundle.content))
    for rule in content["files"]["rules.yaml"]["rules"]:
        if rule["id"] == "large-refunds-need-finance":
            rule["when"] = "args.amount > 500"
    return bundle_from_content(content)


class TestDecide:
    def test_returns_and_records_the_decision(self, charter: Charter) -> None:
        """A decision is returned with its ledger position and the same decision is stored."""
        record = charter.decide(refund())
        assert record.verdict is Verdict.ALLOW
        assert record.id == "d-000001"
        [entry] = list(charter.store.entries(after=record.seq - 1, limit=1))
        assert entry.kind == "decision"
        payload = entry.payload_object()
        assert payload["decision_id"] == record.id
        assert payload["decision"] == record.decision.to_json()
        assert entry.at == record.at

    def test_records_state_and_provenance(self, charter: Charter) -> None:
        """The payload holds the agent state the engine saw and who/what proposed the action."""
        charter.decide(refund())
        charter.decide(refund(n=2))
        payload = payloads(charter)[-1]
        assert payload["state"]["budgets"] == {"refunds-per-hour": {"count": 1, "risk": 0}}
        assert payload["state"]["halts"] == []
        assert payload["budgets"] == ["refunds-per-hour"]
        assert payload["provenance"] == {
            "agent": "support-bot",
            "role": "support",
            "owner": "support-lead@example.com",
            "model_id": "gpt-5-mini",
            "model_version": "2026-08-01",
            "data_sources": [],
            "rationale": "customer received a damaged item",
        }

    def test_data_rules_hash_mask_and_drop(self, charter: Charter) -> None:
        """Personal fields are hashed, masked or dropped in the stored request, and listed."""
        charter.decide(refund(customer_email=EMAIL))
        charter.decide(mail())
        refund_payload, mail_payload = payloads(charter)
        assert refund_payload["request"]["args"]["customer_email"].startswith("sha256:")
        assert refund_payload["redacted"] == [{"field": "args.customer_email", "store": "hash"}]
        args = mail_payload["request"]["args"]
        assert args["to"] == "s***@inbox.test"
        assert "body" not in args
        assert sorted(r["field"] for r in mail_payload["redacted"]) == ["args.body", "args.to"]

    def test_raw_personal_data_never_reaches_the_file(
        self, bundle: Bundle, db: Path, clock: FakeClock
    ) -> None:
        """Neither the database file nor its WAL ever holds the raw personal values."""
        with make_charter(bundle, db, clock=clock) as charter:
            charter.decide_many([refund(customer_email=EMAIL), mail()])
            open_bytes = db_bytes(db)
        closed_bytes = db_bytes(db)
        assert b"Dear Sam" in BODY.encode()  # the probe itself is sound
        for data in (open_bytes, closed_bytes):
            for secret in (EMAIL, RECIPIENT, BODY, "4471-CONFIDENTIAL", "jane.private"):
                assert secret.encode() not in data

    def test_redacted_request_still_replays(self, charter: Charter) -> None:
        """A decision whose request lost a required field to a drop rule still reproduces."""
        charter.decide(mail())
        report = charter.replay()
        assert report.ok
        assert report.unchanged == 1

    def test_decide_many_rejects_a_malformed_request_and_records_nothing(
        self, charter: Charter
    ) -> None:
        """One malformed request in a batch records none of the batch."""
        before = charter.store.head()
        bad = {**refund(), "context": {"mood": "great"}}
        with pytest.raises(RequestInvalid) as caught:
            charter.decide_many([refund(), bad, refund(n=3)])
        assert caught.value.field == "context.mood"
        assert charter.store.head() == before
        assert payloads(charter) == []

    def test_decide_many_records_in_order(self, charter: Charter) -> None:
        """A batch is recorded in the order given, with increasing seqs and times."""
        records = charter.decide_many([refund(n=i) for i in range(1, 6)])
        assert [r.seq for r in records] == sorted(r.seq for r in records)
        assert [r.at for r in records] == sorted(r.at for r in records)
        assert [p["request"]["args"]["order_id"] for p in payloads(charter)] == [
            f"ord-{i}" for i in range(1, 6)
        ]


class TestBudgets:
    def test_the_41st_refund_in_an_hour_needs_approval(self, charter: Charter) -> None:
        """Forty refunds an hour are allowed; the forty-first waits for a person."""
        records = charter.decide_many([refund(n=i) for i in range(40)])
        assert {r.verdict for r in records} == {Verdict.ALLOW}
        record = charter.decide(refund(n=41))
        assert record.verdict is Verdict.REQUIRE_APPROVAL
        assert [r.rule for r in record.decision.reasons] == ["refunds-per-hour"]
        assert payloads(charter)[-1]["state"]["budgets"]["refunds-per-hour"]["count"] == 40

    def test_the_budget_refills_when_the_window_passes(
        self, charter: Charter, clock: FakeClock
    ) -> None:
        """Once the first refund is an hour old, a refund is allowed again."""
        first = clock.now
        charter.decide_many([refund(n=i) for i in range(40)])
        clock.set(first.replace(minute=first.minute + 59))
        assert charter.decide(refund()).verdict is Verdict.REQUIRE_APPROVAL
        clock.set(first.replace(hour=first.hour + 1))
        assert charter.decide(refund()).verdict is Verdict.ALLOW

    def test_usage_survives_reopening(self, bundle: Bundle, db: Path, clock: FakeClock) -> None:
        """Budget usage is rebuilt from the ledger when a Charter is opened again."""
        with make_charter(bundle, db, clock=clock) as charter:
            charter.decide_many([refund(n=i) for i in range(40)])
        with make_charter(bundle, db, clock=clock, ids=sequential_ids("e")) as charter:
            record = charter.decide(refund())
        assert record.verdict is Verdict.REQUIRE_APPROVAL

    def test_longer_windows_are_not_forgotten(
        self, bundle: Bundle, charter: Charter, clock: FakeClock
    ) -> None:
        """A day-long budget still counts usage after the agent used a budget of an hour."""
        content = copy.deepcopy(dict(bundle.content))
        content["files"]["risk.yaml"]["budgets"].append(
            {
                "id": "campaigns-per-day",
                "actions": ["mail.bulk_send"],
                "window": "1d",
                "max_count": 1,
                "reason": "one campaign a day",
            }
        )
        charter.deploy(bundle_from_content(content))
        campaign = {
            "agent": "outreach-bot",
            "action": "mail.bulk_send",
            "args": {"segment": "trial-users", "recipients": 800, "subject": "News"},
            "context": {"confidence": 0.9, "rationale": "monthly product news"},
        }
        assert charter.decide(campaign).verdict is Verdict.ALLOW
        clock.advance(hours=5)
        assert charter.decide(mail()).verdict is Verdict.ALLOW
        clock.advance(hours=1)
        assert charter.decide(campaign).verdict is Verdict.REQUIRE_APPROVAL


class TestHalts:
    def test_a_halt_denies_and_is_recorded(self, charter: Charter) -> None:
        """A halted agent is refused with the halt's reason, and the halt is in the ledger."""
        charter.halt("agent", "support-bot", reason="incident 4411", by="oncall")
        record = charter.decide(refund())
        assert record.verdict is Verdict.DENY
        assert [r.code for r in record.decision.reasons] == ["halted"]
        assert "incident 4411" in record.decision.reasons[0].message
        assert payloads(charter, "halt") == [
            {"scope": "agent", "target": "support-bot", "reason": "incident 4411", "by": "oncall"}
        ]

    def test_a_halt_covers_only_its_target(self, charter: Charter) -> None:
        """Halting one agent leaves the others deciding as usual."""
        charter.halt("agent", "support-bot", reason="incident", by="oncall")
        assert charter.decide(mail()).verdict is Verdict.ALLOW

    def test_halts_survive_reopening_and_resume_lifts_them(
        self, bundle: Bundle, db: Path, clock: FakeClock
    ) -> None:
        """A halt stays in force across restarts until resumed, and the resume does too."""
        with make_charter(bundle, db, clock=clock) as charter:
            charter.halt(reason="all stop", by="oncall")
        with make_charter(bundle, db, clock=clock, ids=sequential_ids("b")) as charter:
            assert [h.scope for h in charter.halts] == ["all"]
            assert charter.decide(mail()).verdict is Verdict.DENY
            charter.resume(by="oncall")
            assert charter.halts == ()
            assert charter.decide(mail()).verdict is Verdict.ALLOW
        with make_charter(bundle, db, clock=clock, ids=sequential_ids("c")) as charter:
            assert charter.halts == ()
            assert payloads(charter, "resume") == [{"scope": "all", "target": None, "by": "oncall"}]

    def test_a_malformed_halt_is_refused(self, charter: Charter) -> None:
        """An agent halt without a target is an error, and nothing is recorded."""
        before = charter.store.head()
        with pytest.raises(RequestInvalid):
            charter.halt("agent", reason="?", by="oncall")
        assert charter.store.head() == before


class TestDeploy:
    def test_opening_records_the_first_deploy(self, charter: Charter, bundle: Bundle) -> None:
        """A new ledger starts with a `policy.deployed` entry for the live bundle."""
        [deployed] = payloads(charter, "policy.deployed")
        assert deployed["version"] == bundle.version
        assert deployed["previous"] is None

    def test_deploy_records_the_change_and_stores_the_bundle_once(
        self, bundle: Bundle, db: Path, clock: FakeClock
    ) -> None:
        """Deploying records old and new versions; each bundle's content is stored once."""
        new = stricter(bundle)
        with make_charter(bundle, db, clock=clock) as charter:
            charter.deploy(new)
            charter.deploy(new)
            assert charter.decide(refund(600)).decision.policy_version == new.version
            deployed = payloads(charter, "policy.deployed")
        assert [(p["previous"], p["version"]) for p in deployed] == [
            (None, bundle.version),
            (bundle.version, new.version),
        ]
        with make_charter(new, db, clock=clock, ids=sequential_ids("r")) as charter:
            assert len(payloads(charter, "policy.deployed")) == 2
            assert charter.store.get_bundle(new.version) == new.canonical_content()
        with raw(db) as connection:
            rows = connection.execute("SELECT version FROM bundles ORDER BY version").fetchall()
        assert sorted(v for (v,) in rows) == sorted([bundle.version, new.version])


class TestAudit:
    def test_verify_is_ok_after_many_decisions(self, charter: Charter) -> None:
        """A ledger written only through Charter verifies, every entry counted."""
        for start in range(0, 300, 100):
            batch = [refund(n=i, amount=10 + i % 900) for i in range(start, start + 100)]
            charter.decide_many(batch)
        charter.halt("action", "payments.refund", reason="audit", by="oncall")
        charter.decide(refund())
        report = charter.verify()
        assert report.ok, report.problem
        kinds = [e.kind for e in charter.store.entries()]
        assert report.count == charter.store.head().seq == len(kinds)
        assert kinds.count("decision") == 301
        # every decision that needs people opened its approval (or was refused at the cap)
        views = [
            charter.get_decision(e.payload_object()["decision_id"])
            for e in charter.store.entries()
            if e.kind == "decision"
        ]
        needing = sum(v is not None and v.record.verdict.value == "require_approval" for v in views)
        assert kinds.count("approval.opened") + kinds.count("approval.refused") == needing

    def test_replay_reproduces_every_decision(self, charter: Charter) -> None:
        """Replaying under the recorded versions gives exactly the recorded decisions."""
        charter.decide_many([refund(n=i, amount=50 * i) for i in range(1, 60)])
        charter.decide_many([mail(), {"agent": "nobody", "action": "x.y"}])
        report = charter.replay()
        assert report.ok
        assert (report.total, report.unchanged, report.changed) == (61, 61, 0)
        assert report.mismatches == []

    def test_replay_against_a_changed_bundle_reports_the_difference(
        self, bundle: Bundle, charter: Charter
    ) -> None:
        """A what-if replay counts transitions, rules newly fired and agents affected."""
        charter.decide_many([refund(600, n=1), refund(700, n=2), refund(40, n=3), refund(2000)])
        trainee = {**refund(600, n=5), "agent": "support-bot-trainee"}
        charter.decide(trainee)
        new = stricter(bundle)
        report = charter.replay(new)
        assert report.ok
        assert report.against == new.version
        assert (report.total, report.changed, report.unchanged) == (5, 3, 2)
        assert dict(report.transitions) == {
            ("allow", "require_approval"): 2,
            ("require_approval", "require_approval"): 1,
        }
        assert report.by_rule == {"large-refunds-need-finance": {"newly_fired": 3}}
        assert {agent: dict(c) for agent, c in report.by_agent.items()} == {
            "support-bot": {("allow", "require_approval"): 2},
            "support-bot-trainee": {("require_approval", "require_approval"): 1},
        }

    def test_replay_fails_when_a_stored_bundle_was_altered(
        self, bundle: Bundle, db: Path, clock: FakeClock
    ) -> None:
        """A bundle edited in the database is refused on open and by replay, saying so."""
        with make_charter(bundle, db, clock=clock) as charter:
            charter.decide_many([refund(n=i) for i in range(3)])
        drop_triggers(db, "bundles")
        altered = bundle.canonical_content().replace(b"args.amount > 1000", b"args.amount > 9000")
        assert altered != bundle.canonical_content()
        with raw(db) as connection:
            connection.execute("UPDATE bundles SET content = ?", (altered,))
        with pytest.raises(BundleConflictError, match="already stored with other content"):
            make_charter(bundle, db, clock=clock)
        with make_charter(stricter(bundle), db, clock=clock, ids=sequential_ids("x")) as charter:
            report = charter.replay()
        assert not report.ok
        assert report.error_count == 3
        assert all("altered" in message for _, message in report.errors)
        assert bundle.version in report.errors[0][1]

    def test_tampered_payload_is_caught_by_the_cli(
        self, bundle: Bundle, db: Path, clock: FakeClock
    ) -> None:
        """Editing one recorded payload makes `charter ledger verify` fail naming the entry."""
        with make_charter(bundle, db, clock=clock) as charter:
            records = charter.decide_many([refund(2000, n=i) for i in range(10)])
        target = records[4].seq
        drop_triggers(db, "ledger_entries")
        with raw(db) as connection:
            (text,) = connection.execute(
                "SELECT payload FROM ledger_entries WHERE seq = ?", (target,)
            ).fetchone()
            forged = text.replace('"verdict":"require_approval"', '"verdict":"allow"')
            assert forged != text
            connection.execute(
                "UPDATE ledger_entries SET payload = ? WHERE seq = ?", (forged, target)
            )
        where = ["--store", str(db)] if "://" in str(db) else ["--db", str(db)]
        result = CliRunner().invoke(app, ["ledger", "verify", *where])
        assert result.exit_code == 1
        assert f"entry {target}" in result.output
        assert json.loads(forged)["decision"]["verdict"] == "allow"
