"""The sans-I/O flows, driven by hand: every step and every failure, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from charter.errors import CharterError, GrantRefused
from charter.model import Decision, Reason, RouteRef, Verdict
from charter.sdk import (
    ActionDenied,
    ApprovalInfo,
    ApprovalRequired,
    CharterUnavailable,
    DecisionResult,
    DecisionStatus,
    Grant,
    Resolution,
)
from charter.sdk._flow import (
    Backoff,
    Decide,
    FailOpen,
    Fetch,
    Op,
    OutcomeLost,
    Redeem,
    Report,
    Run,
    Sleep,
    Wait,
    governed_flow,
    resume_flow,
    run_async,
    run_sync,
    wait_flow,
)

ARGS = {"order_id": "ord-1", "amount": 40, "currency": "USD"}
GRANT = Grant("g-1", "secret", "2026-03-02T10:05:00.000000Z", "sha256:abc")
ROUTE = RouteRef("finance-review", ("finance",), 1, 14400, "deny")
UNREACHABLE = CharterUnavailable("charter at http://nowhere could not be asked")


def result(verdict: Verdict, *, grant: Grant | None = GRANT) -> DecisionResult:
    decision = Decision(
        verdict=verdict,
        risk=10,
        factors=(),
        reasons=(Reason("why", "because the policy says so"),),
        policy_version="sha256:policy",
        agent="support-bot",
        action="payments.refund",
        role="support",
        autonomy_level=2,
        autonomy_max_risk=45,
        ceiling=90,
        route=ROUTE if verdict in (Verdict.REQUIRE_APPROVAL, Verdict.ESCALATE) else None,
    )
    return DecisionResult("d-1", decision, grant if verdict is Verdict.ALLOW else None)


class Script:
    """Answers operations from a table keyed by their type; records what was asked."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.ops: list[Op] = []

    def __call__(self, op: Op) -> Any:
        self.ops.append(op)
        answer = self.answers.get(type(op).__name__)
        if isinstance(answer, BaseException):
            raise answer
        return answer() if callable(answer) else answer

    def kinds(self) -> list[str]:
        return [type(op).__name__ for op in self.ops]


def ticking(step: float = 0.5) -> Callable[[], float]:
    """A clock that moves on by `step` seconds at every reading."""
    counter = iter(range(10_000))
    return lambda: next(counter) * step


def flow(*, fail_open: bool = False, args: dict[str, Any] | None = None) -> Any:
    return governed_flow(
        Decide("support-bot", "payments.refund", ARGS, {"confidence": 0.9}),
        args_now=lambda: args if args is not None else ARGS,
        fail_open=fail_open,
        clock=ticking(),
    )


def boom() -> None:
    raise ValueError("the payment provider said no")


class TestGovernedFlow:
    def test_allowed_runs_between_redeem_and_report(self) -> None:
        """An allowed request is redeemed, run, then reported as a success with its duration."""
        script = Script(Decide=result(Verdict.ALLOW), Run="refunded")

        assert run_sync(flow(), script) == "refunded"
        assert script.kinds() == ["Decide", "Redeem", "Run", "Report"]
        assert script.ops[1] == Redeem(GRANT, ARGS)
        assert script.ops[3] == Report("d-1", True, None, 500.0)

    def test_redeems_with_the_args_as_they_are_before_the_run(self) -> None:
        """The grant is redeemed with `args_now()`, not with what was decided."""
        changed = {**ARGS, "amount": 4000}
        script = Script(Decide=result(Verdict.ALLOW), Run=None)

        run_sync(flow(args=changed), script)

        assert script.ops[1] == Redeem(GRANT, changed)

    def test_deny_raises_action_denied_without_running(self) -> None:
        """A `deny` raises ActionDenied carrying the decision, and nothing runs."""
        script = Script(Decide=result(Verdict.DENY))

        with pytest.raises(ActionDenied) as raised:
            run_sync(flow(), script)

        assert script.kinds() == ["Decide"]
        assert raised.value.decision_id == "d-1"
        assert raised.value.reasons[0].message == "because the policy says so"

    @pytest.mark.parametrize("verdict", [Verdict.REQUIRE_APPROVAL, Verdict.ESCALATE])
    def test_approval_raises_approval_required(self, verdict: Verdict) -> None:
        """`require_approval` and `escalate` raise ApprovalRequired with id, verdict and route."""
        script = Script(Decide=result(verdict))

        with pytest.raises(ApprovalRequired) as raised:
            run_sync(flow(), script)

        assert script.kinds() == ["Decide"]
        assert (raised.value.decision_id, raised.value.verdict) == ("d-1", verdict)
        assert raised.value.route == ROUTE

    def test_an_exception_is_reported_then_re_raised(self) -> None:
        """A failing action is reported with its error type and message, then re-raised."""
        script = Script(Decide=result(Verdict.ALLOW), Run=boom)

        with pytest.raises(ValueError, match="said no"):
            run_sync(flow(), script)

        assert script.ops[-1] == Report(
            "d-1", False, "ValueError: the payment provider said no", 500.0
        )

    def test_fails_closed_when_decide_is_unreachable(self) -> None:
        """By default an unreachable Charter raises and nothing runs."""
        script = Script(Decide=UNREACHABLE)

        with pytest.raises(CharterUnavailable):
            run_sync(flow(), script)

        assert script.kinds() == ["Decide"]

    def test_fails_open_when_decide_is_unreachable_and_allowed_to(self) -> None:
        """With fail_open the action runs after a FailOpen notice, and nothing is reported."""
        script = Script(Decide=UNREACHABLE, Run="ran anyway")

        assert run_sync(flow(fail_open=True), script) == "ran anyway"
        assert script.kinds() == ["Decide", "FailOpen", "Run"]
        assert script.ops[1] == FailOpen("decide", "payments.refund", UNREACHABLE)

    def test_fails_open_at_redeem_and_still_reports(self) -> None:
        """An unreachable redeem with fail_open runs the action and still tries to report."""
        script = Script(Decide=result(Verdict.ALLOW), Redeem=UNREACHABLE, Run="ok")

        assert run_sync(flow(fail_open=True), script) == "ok"
        assert script.kinds() == ["Decide", "Redeem", "FailOpen", "Run", "Report"]

    def test_fails_closed_at_redeem(self) -> None:
        """An unreachable redeem without fail_open raises before the action runs."""
        script = Script(Decide=result(Verdict.ALLOW), Redeem=UNREACHABLE)

        with pytest.raises(CharterUnavailable):
            run_sync(flow(), script)

        assert "Run" not in script.kinds()

    def test_a_refused_grant_stops_the_action(self) -> None:
        """GrantRefused is never failed open: the action does not run."""
        refused = GrantRefused("args_mismatch", "the arguments differ")
        script = Script(Decide=result(Verdict.ALLOW), Redeem=refused)

        with pytest.raises(GrantRefused):
            run_sync(flow(fail_open=True), script)

        assert script.kinds() == ["Decide", "Redeem"]

    def test_a_lost_outcome_does_not_fail_an_action_that_ran(self) -> None:
        """A report that cannot be recorded becomes OutcomeLost; the result is returned."""
        script = Script(Decide=result(Verdict.ALLOW), Run="done", Report=UNREACHABLE)

        assert run_sync(flow(), script) == "done"
        assert script.kinds()[-1] == "OutcomeLost"
        assert script.ops[-1] == OutcomeLost("d-1", UNREACHABLE)

    def test_an_allow_without_a_grant_is_refused(self) -> None:
        """An allow that carries no grant cannot be redeemed, so nothing runs."""
        script = Script(Decide=result(Verdict.ALLOW, grant=None))

        with pytest.raises(CharterError) as raised:
            run_sync(flow(), script)

        assert raised.value.code == "grant_missing"
        assert script.kinds() == ["Decide"]

    def test_the_async_driver_takes_the_same_steps(self) -> None:
        """`run_async` performs the same operations in the same order as `run_sync`."""
        script = Script(Decide=result(Verdict.ALLOW), Run="refunded")

        async def perform(op: Op) -> Any:
            return script(op)

        assert asyncio.run(run_async(flow(), perform)) == "refunded"
        assert script.kinds() == ["Decide", "Redeem", "Run", "Report"]


def status(state: str) -> DecisionStatus:
    return DecisionStatus("d-1", state, result(Verdict.REQUIRE_APPROVAL))


class FakeTime:
    """A monotonic clock that only sleeping and held polls move."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_wait(
    states: list[str], timeout: float, held: float = 0.0
) -> tuple[DecisionStatus, list[Op]]:
    """Wait on a decision that reads as `states` in turn; each poll takes `held` seconds."""
    clock = FakeTime()
    replies = iter(states)
    ops: list[Op] = []

    def perform(op: Op) -> DecisionStatus | None:
        ops.append(op)
        if isinstance(op, Sleep):
            clock.now += op.seconds
            return None
        clock.now += held
        return status(next(replies))

    backoff = Backoff(first=1.0, factor=2.0, most=3.0)
    return run_sync(wait_flow("d-1", timeout, clock=clock, backoff=backoff), perform), ops


class TestWaitFlow:
    def test_returns_at_once_when_already_decided(self) -> None:
        """A decision that is no longer waiting is returned after one poll, without sleeping."""
        final, ops = run_wait(["allowed"], timeout=10)

        assert final.state == "allowed"
        assert ops == [Fetch("d-1", 10.0)]

    def test_backs_off_between_polls_up_to_the_cap(self) -> None:
        """Polls are spaced 1, 2, 3, 3 seconds: doubling, never above `most`."""
        final, ops = run_wait(["pending"] * 4 + ["denied"], timeout=60)

        assert final.state == "denied"
        assert [op.seconds for op in ops if isinstance(op, Sleep)] == [1.0, 2.0, 3.0, 3.0]

    def test_escalated_counts_as_waiting(self) -> None:
        """An escalated decision is still in people's hands, so waiting goes on."""
        final, _ = run_wait(["escalated", "executed"], timeout=60)

        assert final.state == "executed"

    def test_gives_back_the_waiting_status_at_the_deadline(self) -> None:
        """When time runs out the last status is returned, still waiting, never oversleeping."""
        final, ops = run_wait(["pending"] * 10, timeout=2.5)

        assert final.waiting
        assert sum(op.seconds for op in ops if isinstance(op, Sleep)) == 2.5

    def test_a_held_poll_is_not_followed_by_a_sleep(self) -> None:
        """Time the server held a poll (long poll) counts against the backoff step."""
        final, ops = run_wait(["pending", "pending", "allowed"], timeout=60, held=5.0)

        assert final.state == "allowed"
        assert not [op for op in ops if isinstance(op, Sleep)]

    def test_an_unknown_decision_is_an_error(self) -> None:
        """Waiting on an id that does not exist raises `decision_unknown`."""
        with pytest.raises(CharterError) as raised:
            run_sync(wait_flow("nope", 5, clock=FakeTime()), lambda op: None)

        assert raised.value.code == "decision_unknown"


APPROVED = {"order_id": "ord-1", "amount": 30, "currency": "USD"}


def settled(state: str, *, approved: dict[str, Any] | None = None, **resolved: Any) -> Any:
    """A decision's status after people had their say (approved args, resolution)."""
    resolution = Resolution(**resolved) if resolved else None
    approval = ApprovalInfo(
        "apr_d-1",
        state if state != "approved" else "approved",
        args=approved or ARGS,
        modified=approved is not None,
        resolution=resolution,
    )
    base = result(Verdict.REQUIRE_APPROVAL)
    grant = GRANT if state == "approved" else None
    return DecisionStatus(
        "d-1", state, DecisionResult("d-1", base.decision, grant, approval=approval)
    )


def waiting_flow(wait: float = 30.0, **options: Any) -> Any:
    return governed_flow(
        Decide("support-bot", "payments.refund", ARGS, {"confidence": 0.9}),
        args_now=lambda: ARGS,
        fail_open=options.pop("fail_open", False),
        clock=ticking(),
        wait=wait,
        **options,
    )


class TestWaitingForPeople:
    def test_approved_runs_with_the_approved_args(self) -> None:
        """Decide → wait → redeem and run with the (modified) approved args → report."""
        script = Script(
            Decide=result(Verdict.REQUIRE_APPROVAL), Wait=settled("approved", approved=APPROVED)
        )

        run_sync(waiting_flow(), script)

        assert script.kinds() == ["Decide", "Wait", "Redeem", "Run", "Report"]
        assert script.ops[1] == Wait("d-1", 30.0)
        assert script.ops[2] == Redeem(GRANT, APPROVED)
        assert script.ops[3] == Run(APPROVED)
        report = script.ops[4]
        assert isinstance(report, Report)
        assert (report.decision_id, report.success) == ("d-1", True)

    def test_no_wait_raises_at_once(self) -> None:
        """`wait=0` keeps the old contract: ApprovalRequired without waiting."""
        script = Script(Decide=result(Verdict.ESCALATE))

        with pytest.raises(ApprovalRequired):
            run_sync(waiting_flow(wait=0), script)

        assert script.kinds() == ["Decide"]

    def test_still_waiting_raises_approval_required_with_the_wait(self) -> None:
        script = Script(Decide=result(Verdict.REQUIRE_APPROVAL), Wait=settled("pending"))

        with pytest.raises(ApprovalRequired) as raised:
            run_sync(waiting_flow(wait=2), script)

        assert (raised.value.decision_id, raised.value.waited) == ("d-1", 2)
        assert "Run" not in script.kinds()

    def test_denied_raises_the_reviewers_reason(self) -> None:
        script = Script(
            Decide=result(Verdict.REQUIRE_APPROVAL),
            Wait=settled("denied", code="denied", by="alice", at="t", reason="not shipped"),
        )

        with pytest.raises(ActionDenied) as raised:
            run_sync(waiting_flow(), script)

        assert (raised.value.reason, raised.value.denied_by) == ("not shipped", "alice")
        assert str(raised.value).endswith("was denied by alice (decision d-1): not shipped")
        assert "Redeem" not in script.kinds()

    def test_unreachable_while_waiting_never_fails_open(self) -> None:
        """A decision that needs people does not run because Charter went away meanwhile."""
        script = Script(Decide=result(Verdict.REQUIRE_APPROVAL), Wait=UNREACHABLE)

        with pytest.raises(CharterUnavailable):
            run_sync(waiting_flow(fail_open=True), script)

        assert "Run" not in script.kinds()

    def test_args_that_do_not_fit_are_refused_before_redeeming(self) -> None:
        def check(_args: Any) -> None:
            raise TypeError("does not fit")

        script = Script(Decide=result(Verdict.REQUIRE_APPROVAL), Wait=settled("approved"))

        with pytest.raises(TypeError):
            run_sync(waiting_flow(check=check), script)

        assert script.kinds() == ["Decide", "Wait"]


class TestResumeFlow:
    def resume(self, **options: Any) -> Any:
        return resume_flow(
            "d-1",
            agent=options.pop("agent", "support-bot"),
            action=options.pop("action", "payments.refund"),
            wait=options.pop("wait", 10.0),
            fail_open=False,
            clock=ticking(),
        )

    def test_waits_then_runs_the_approved_args(self) -> None:
        script = Script(Wait=settled("approved", approved=APPROVED))

        run_sync(self.resume(), script)

        assert script.kinds() == ["Wait", "Redeem", "Run", "Report"]
        assert script.ops[0] == Wait("d-1", 10.0)
        assert script.ops[2] == Run(APPROVED)

    def test_another_agents_decision_is_refused(self) -> None:
        script = Script(Wait=settled("approved"))

        with pytest.raises(CharterError) as raised:
            run_sync(self.resume(agent="billing-bot"), script)

        assert raised.value.code == "decision_mismatch"
        assert script.kinds() == ["Wait"]

    def test_an_expired_decision_is_a_denial(self) -> None:
        script = Script(Wait=settled("expired", code="expired", by="charter", at="T"))

        with pytest.raises(ActionDenied) as raised:
            run_sync(self.resume(), script)

        assert "expired unapproved at T" in str(raised.value)

    def test_a_used_grant_is_refused_by_charter(self) -> None:
        """A second resume tries the grant; Charter refuses it, and nothing runs."""
        script = Script(Wait=settled("approved"), Redeem=GrantRefused("grant_used", "used"))

        with pytest.raises(GrantRefused):
            run_sync(self.resume(), script)

        assert "Run" not in script.kinds()
