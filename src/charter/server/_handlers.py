"""What each route does, as functions over the gateway.

The ASGI layer (`_app`) reads bodies and hands the bytes here: each function
authenticates the caller, parses and checks the body, calls the gateway once and returns
the JSON answer. Most are blocking and run in a worker thread; the `_async` ones run on the
event loop and await the ledger commit. Nothing here knows
about HTTP beyond `ApiError`.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from charter.errors import CharterError, GrantRefused, StoreUnavailable
from charter.model import ActionRequest, AgentProfile
from charter.server._auth import authorize, require_agent
from charter.server._body import parse_json, parse_request
from charter.server._errors import ApiError, from_charter_error, store_unavailable_deny
from charter.server._metrics import Metrics
from charter.server._schemas import AgentPut, OutcomeReport, RedeemRequest
from charter.service import Charter, DecisionRecord, DecisionView, Principal
from charter.store._core import CoreStore
from charter.store._opening import unavailable

__all__ = ["READY_TIMEOUT", "Handlers", "recorded_trace_id"]

_M = TypeVar("_M", bound=BaseModel)


def _validated(model: type[_M], value: Any) -> _M:
    """Check a decoded body against `model`, naming the first offending field."""
    if not isinstance(value, dict):
        raise ApiError("request_invalid", "the body must be a JSON object")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).lower()
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise ApiError("request_invalid", f"`{field}`: {message}", field) from None


def recorded_trace_id(charter: Charter, view: DecisionView) -> str | None:
    """The trace id a decision's request recorded in the ledger, if it named one.

    A decision read back from the index carries its request as stored less its ids, so
    the id is read from the decision's own ledger entry (one indexed read).
    """
    if view.record.request.trace_id is not None:
        return view.record.request.trace_id
    entry = charter.store.entry(view.record.seq)
    request = None if entry is None else entry.payload_object().get("request")
    trace_id = request.get("trace_id") if isinstance(request, dict) else None
    return trace_id if isinstance(trace_id, str) else None


class Handlers:
    """The routes' logic, bound to one gateway and one set of metrics.

    Args:
        charter: the gateway every call goes through.
        metrics: where figures are counted.
    """

    def __init__(self, charter: Charter, metrics: Metrics) -> None:
        self.charter = charter
        self.metrics = metrics
        self._probe = _StoreProbe(charter, READY_TIMEOUT)

    def _call(self, operation: str, auth: str | None) -> Principal:
        return authorize(self.charter, auth, operation)

    def _as_agent(self, principal: Principal, agent: object, operation: str, field: str) -> None:
        """Refuse, and record, an agent key naming another agent."""
        try:
            require_agent(principal, agent, field)
        except ApiError:
            self.charter.record_access_denied(
                principal, "agent_mismatch", operation=operation, named_agent=str(agent)[:256]
            )
            raise

    # -- decisions ---------------------------------------------------------------------

    async def decide_async(
        self,
        auth: str | None,
        body: bytes,
        header_key: str | None,
        started: float,
        trace_id: str | None = None,
    ) -> DecisionRecord:
        """Authenticate, read and decide one request on the event loop; count it.

        The body is parsed once (`parse_request`) and checked field by field once
        (`ActionRequest.from_json`); only an agent key naming another agent, which is
        recorded and so waits on the ledger, takes a worker thread. The decision is awaited
        until its entry is durable. A store that is away at any step (the key's lookup,
        the idempotency index, the commit) makes the answer a `deny`, unrecorded: 503
        `store_unavailable` (`store_unavailable_deny`).

        `trace_id` (the agent's `traceparent`, or the server's own trace) becomes the
        request's `trace_id` when the body names none, so the ledger's decision entry
        names the trace its spans and log lines are in.
        """
        try:
            return await self._decide_async(auth, body, header_key, started, trace_id)
        except Exception as exc:
            # `StoreUnavailable`, or a driver's error from a store path that names no
            # outage itself; anything else is answered as it is.
            outage = unavailable(exc)
            if outage is None:
                raise
            raise store_unavailable_deny(outage) from None

    async def _decide_async(
        self,
        auth: str | None,
        body: bytes,
        header_key: str | None,
        started: float,
        trace_id: str | None,
    ) -> DecisionRecord:
        principal = self._call("create_decision", auth)
        value, trusted = parse_request(body, header_key)
        if trace_id is not None and isinstance(value, dict) and value.get("trace_id") is None:
            value["trace_id"] = trace_id  # the body is this call's own: nothing else holds it
        if (
            principal.role == "agent"
            and isinstance(value, dict)
            and value.get("agent") != principal.agent
        ):
            await run_in_threadpool(
                self._as_agent, principal, value.get("agent"), "create_decision", "agent"
            )
        try:
            request = ActionRequest.from_json(value, trusted=trusted)
            record = await self.charter.decide_async(request)
        except StoreUnavailable:
            raise
        except CharterError as exc:
            raise from_charter_error(exc) from None
        metrics = self.metrics
        if record.replayed:
            metrics.replays.inc()
        else:
            verdict = record.decision.verdict.value
            counter = metrics.decided.get(verdict) or metrics.decisions.labels(verdict)
            counter.inc()
            metrics.decision_seconds.observe(time.perf_counter() - started)
        return record

    def get_decision(self, auth: str | None, decision_id: str) -> dict[str, Any]:
        """A decision and where it stands."""
        return self._decision(auth, decision_id)[0]

    def get_decision_traced(
        self, auth: str | None, decision_id: str
    ) -> tuple[dict[str, Any], str | None]:
        """A decision and where it stands, and the trace id its request recorded."""
        answer, view = self._decision(auth, decision_id)
        return answer, recorded_trace_id(self.charter, view)

    def _decision(self, auth: str | None, decision_id: str) -> tuple[dict[str, Any], DecisionView]:
        principal = self._call("get_decision", auth)
        view = self.charter.get_decision(decision_id)
        if view is None:
            raise ApiError("not_found", f"no decision `{decision_id}`", "decision_id")
        self._as_agent(principal, view.record.request.agent, "get_decision", "decision_id")
        # The agent needs the token of a grant an approval issued; so may an admin acting
        # for it. Reviewers and auditors see the grant, never the token.
        return view.to_json(with_token=principal.role in ("agent", "admin")), view

    # -- grants and outcomes -----------------------------------------------------------

    async def redeem_grant_async(self, auth: str | None, body: bytes) -> dict[str, Any]:
        """Redeem a grant once for exactly the decided arguments, on the event loop.

        The commit is awaited without a worker thread.
        """
        self._call("redeem_grant", auth)
        asked = _validated(RedeemRequest, parse_json(body))
        try:
            redemption = await self.charter.redeem_async(asked.grant_id, asked.token, asked.args)
        except CharterError as exc:
            raise self._refused(exc) from None
        self.metrics.grants_redeemed.inc()
        return redemption.to_json()

    def _refused(self, exc: CharterError) -> ApiError:
        """A gateway error as the API answers it; grant refusals are counted by code."""
        if isinstance(exc, GrantRefused):
            self.metrics.grants_refused.labels(exc.code).inc()
        return from_charter_error(exc)

    async def record_outcome_async(self, auth: str | None, body: bytes) -> dict[str, Any]:
        """Record what happened when an action ran, awaiting the commit on the event loop.

        Only an agent key's check, which reads the decision and may record a mismatch,
        runs in a worker thread.
        """
        principal, report = self._outcome_report(auth, body)
        if principal.role == "agent":
            await run_in_threadpool(self.outcome_for_own_agent, principal, report)
        try:
            answer: dict[str, Any] = await self.charter.record_outcome_async(
                report.decision_id,
                success=report.success,
                error=report.error,
                duration_ms=report.duration_ms,
                result_digest=report.result_digest,
            )
            return answer
        except CharterError as exc:
            raise from_charter_error(exc) from None

    def _outcome_report(self, auth: str | None, body: bytes) -> tuple[Principal, OutcomeReport]:
        principal = self._call("record_outcome", auth)
        return principal, _validated(OutcomeReport, parse_json(body))

    def outcome_for_own_agent(self, principal: Principal, report: OutcomeReport) -> None:
        """Refuse, and record, an agent key reporting on another agent's decision."""
        view = self.charter.get_decision(report.decision_id)
        if view is None:
            raise ApiError("not_found", f"no decision `{report.decision_id}`", "decision_id")
        self._as_agent(principal, view.record.request.agent, "record_outcome", "decision_id")

    # -- ledger ------------------------------------------------------------------------

    def list_ledger(self, auth: str | None, after: int, limit: int) -> dict[str, Any]:
        """A page of entries after `after`, with where the next page starts."""
        self._call("list_ledger", auth)
        entries = self.charter.ledger_page(after, limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        return {
            "entries": [
                {
                    "seq": e.seq,
                    "kind": e.kind,
                    "at": e.at,
                    "payload": e.payload_object(),
                    "leaf_hash": e.leaf_hash,
                    "chain_hash": e.chain_hash,
                }
                for e in entries
            ],
            "next_after": entries[-1].seq if more else None,
        }

    def verify_ledger(self, auth: str | None) -> dict[str, Any]:
        """Verify the whole hash chain and the latest checkpoint."""
        self._call("verify_ledger", auth)
        report = self.charter.verify()
        problem = report.problem
        return {
            "ok": report.ok,
            "count": report.count,
            "head": {"seq": report.head.seq, "chain_hash": report.head.chain_hash},
            "problem": (
                {"code": str(problem.code), "seq": problem.seq, "message": problem.message}
                if problem
                else None
            ),
            "checkpoint_size": report.checkpoint_size,
            "signature_checked": report.signature_checked,
        }

    # -- agents ------------------------------------------------------------------------

    def _agent_view(self, agent_id: str) -> dict[str, Any]:
        profile = self.charter.get_agent(agent_id)
        if profile is None:
            raise ApiError("not_found", f"no agent `{agent_id}`", "agent_id")
        in_force = self.charter.autonomy(agent_id)
        return {
            **profile.to_json(),
            "autonomy_override": in_force if in_force != profile.autonomy else None,
            "autonomy_in_force": in_force,
            # `get_agent` hands back the bundle's own profile unless the registry has one.
            "source": "bundle"
            if profile is self.charter.bundle.agents.get(agent_id)
            else "registry",
            "demotion": self.charter.monitors.demotion(agent_id),
        }

    def get_agent(self, auth: str | None, agent_id: str) -> dict[str, Any]:
        """An agent as decisions see it, with its autonomy in force."""
        principal = self._call("get_agent", auth)
        self._as_agent(principal, agent_id, "get_agent", "agent_id")
        return self._agent_view(agent_id)

    def put_agent(
        self, auth: str | None, agent_id: str, body: bytes
    ) -> tuple[dict[str, Any], bool]:
        """Register or replace an agent; returns its view and whether it is new."""
        principal = self._call("put_agent", auth)
        put = _validated(AgentPut, parse_json(body))
        created = self.charter.get_agent(agent_id) is None
        profile = AgentProfile(
            agent_id, put.role, put.owner, put.model_id, put.model_version, put.autonomy
        )
        try:
            self.charter.put_agent(profile, by=f"key:{principal.key_id}")
        except CharterError as exc:
            raise from_charter_error(exc) from None
        return self._agent_view(agent_id), created

    # -- health ------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether the bundle is loaded, the store answers and is writable, the writer runs.

        The store is asked in a bounded time (`READY_TIMEOUT`), so the answer comes
        promptly whatever the database does; once the database is back, so is `ok`.
        """
        checks: dict[str, str] = {}
        checks["bundle"] = "ok" if self.charter.bundle is not None else "not loaded"
        checks["store"] = self._probe.check()
        checks["ledger_writer"] = self.charter.writer_problem() or "ok"
        return all(v == "ok" for v in checks.values()), checks


#: Seconds `/readyz` waits for the store before saying it did not answer: a readiness
#: probe must answer well within a load balancer's own timeout, whatever the database
#: host does (a host gone silent holds a query until the TCP timeouts give up).
READY_TIMEOUT = 2.0


class _StoreProbe:
    """Asks the store whether it answers and takes writes, waiting a bounded time.

    The question runs in a daemon thread, one at a time: a poll that finds the last one
    still unanswered (a host gone silent) waits on that one, for at most its bound,
    rather than piling up threads stuck behind the same dead connection.
    """

    def __init__(self, charter: Charter, timeout: float) -> None:
        self._charter = charter
        self._timeout = timeout
        self._lock = threading.Lock()
        self._asking: Future[str] | None = None
        self._since = 0.0

    def check(self) -> str:
        """`ok`, or why the store cannot be used now."""
        with self._lock:
            if self._asking is None or self._asking.done():
                self._asking = Future()
                self._since = time.monotonic()
                threading.Thread(
                    target=self._ask, args=(self._asking,), name="charter-readiness", daemon=True
                ).start()
            asking, since = self._asking, self._since
        try:
            return asking.result(timeout=self._timeout)
        except TimeoutError:
            waited = time.monotonic() - since
            return f"store unavailable: no answer from the database for {waited:.1f} s"

    def _ask(self, answer: Future[str]) -> None:
        store = self._charter.store
        try:
            store.head()  # an indexed read of the ledger itself: the cheapest real question
            said = _writable(store)
        except Exception as exc:  # any failure means not ready; the check says why
            outage = unavailable(exc)
            said = outage.message if outage is not None else f"unreadable: {exc}"
        answer.set_result(said)


def _writable(store: object) -> str:
    """Whether the store takes writes; "ok" or why not."""
    problem = store.writable_problem() if isinstance(store, CoreStore) else None
    return problem or "ok"
