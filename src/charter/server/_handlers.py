"""What each route does, as functions over the gateway.

The ASGI layer (`_app`) reads bodies and hands the bytes here: each function
authenticates the caller, parses and checks the body, calls the gateway once and returns
the JSON answer. Most are blocking and run in a worker thread; the `_async` ones (and
`check_decision`) run on the event loop and await the ledger commit. Nothing here knows
about HTTP beyond `ApiError`.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from charter.errors import CharterError, GrantRefused
from charter.model import AgentProfile
from charter.server._auth import authorize, require_agent
from charter.server._body import parse_json
from charter.server._errors import ApiError, from_charter_error
from charter.server._metrics import Metrics
from charter.server._schemas import AgentPut, OutcomeReport, RedeemRequest
from charter.service import Charter, DecisionRecord, Principal

__all__ = ["Handlers"]

_M = TypeVar("_M", bound=BaseModel)

_MAX_KEY = 256


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


def _idempotency_key(header: str | None, body: Any) -> str | None:
    """The key from the header or the body; both given must agree."""
    if header is None:
        return None
    if not header.strip() or len(header) > _MAX_KEY or not header.isprintable():
        raise ApiError(
            "request_invalid",
            f"`Idempotency-Key` must be 1 to {_MAX_KEY} printable characters",
            "Idempotency-Key",
        )
    in_body = body.get("idempotency_key") if isinstance(body, dict) else None
    if in_body is not None and in_body != header:
        raise ApiError(
            "request_invalid",
            "`idempotency_key` in the body differs from the `Idempotency-Key` header; send one",
            "idempotency_key",
        )
    return header


class Handlers:
    """The routes' logic, bound to one gateway and one set of metrics.

    Args:
        charter: the gateway every call goes through.
        metrics: where figures are counted.
    """

    def __init__(self, charter: Charter, metrics: Metrics) -> None:
        self.charter = charter
        self.metrics = metrics

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

    def check_decision(
        self, auth: str | None, body: bytes, header_key: str | None
    ) -> tuple[Principal, Any, str | None]:
        """Authenticate and parse a decision request (cheap: runs on the event loop).

        Returns the principal, the decoded request and the idempotency key; whether an
        agent key names its own agent is left to `own_agent`, which may write.
        """
        principal = self._call("create_decision", auth)
        request = parse_json(body)
        return principal, request, _idempotency_key(header_key, request)

    @staticmethod
    def names_own_agent(principal: Principal, request: Any) -> bool:
        """Whether a decision request names the key's own agent (checked on the loop).

        Only a mismatch needs `own_agent`, which records it and so blocks on the ledger.
        """
        return isinstance(request, dict) and request.get("agent") == principal.agent

    def own_agent(self, principal: Principal, request: Any) -> None:
        """Refuse, and record, an agent key deciding for another agent."""
        if isinstance(request, dict):
            self._as_agent(principal, request.get("agent"), "create_decision", "agent")

    def answered(self, record: DecisionRecord, started: float) -> dict[str, Any]:
        """Count a decision and shape its answer."""
        self.count(record, started)
        return record.to_json()

    def count(self, record: DecisionRecord, started: float) -> None:
        """Count a decision by verdict with its latency, or an idempotent replay."""
        if record.replayed:
            self.metrics.replays.inc()
        else:
            verdict = record.decision.verdict.value
            counter = self.metrics.decided.get(verdict) or self.metrics.decisions.labels(verdict)
            counter.inc()
            self.metrics.decision_seconds.observe(time.perf_counter() - started)

    def create_decision(
        self, auth: str | None, body: bytes, header_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Decide a request, blocking; returns the answer and whether it was a replay."""
        started = time.perf_counter()
        principal, request, key = self.check_decision(auth, body, header_key)
        self.own_agent(principal, request)
        try:
            record: DecisionRecord = self.charter.decide(request, idempotency_key=key)
        except CharterError as exc:
            raise from_charter_error(exc) from None
        return self.answered(record, started), record.replayed

    def get_decision(self, auth: str | None, decision_id: str) -> dict[str, Any]:
        """A decision and where it stands."""
        principal = self._call("get_decision", auth)
        view = self.charter.get_decision(decision_id)
        if view is None:
            raise ApiError("not_found", f"no decision `{decision_id}`", "decision_id")
        self._as_agent(principal, view.record.request.agent, "get_decision", "decision_id")
        # The agent needs the token of a grant an approval issued; so may an admin acting
        # for it. Reviewers and auditors see the grant, never the token.
        return view.to_json(with_token=principal.role in ("agent", "admin"))

    # -- grants and outcomes -----------------------------------------------------------

    def redeem_grant(self, auth: str | None, body: bytes) -> dict[str, Any]:
        """Redeem a grant once for exactly the decided arguments."""
        self._call("redeem_grant", auth)
        asked = _validated(RedeemRequest, parse_json(body))
        try:
            redemption = self.charter.redeem(asked.grant_id, asked.token, asked.args)
        except CharterError as exc:
            raise self._refused(exc) from None
        self.metrics.grants_redeemed.inc()
        return redemption.to_json()

    async def redeem_grant_async(self, auth: str | None, body: bytes) -> dict[str, Any]:
        """`redeem_grant` on the event loop, awaiting the commit without a worker thread."""
        self._call("redeem_grant", auth)
        asked = _validated(RedeemRequest, parse_json(body))
        try:
            redeem = getattr(self.charter, "redeem_async", None)
            if redeem is None:  # a gateway without the async variant: a worker thread waits
                redemption = await run_in_threadpool(
                    self.charter.redeem, asked.grant_id, asked.token, asked.args
                )
            else:
                redemption = await redeem(asked.grant_id, asked.token, asked.args)
        except CharterError as exc:
            raise self._refused(exc) from None
        self.metrics.grants_redeemed.inc()
        return redemption.to_json()

    def _refused(self, exc: CharterError) -> ApiError:
        """A gateway error as the API answers it; grant refusals are counted by code."""
        if isinstance(exc, GrantRefused):
            self.metrics.grants_refused.labels(exc.code).inc()
        return from_charter_error(exc)

    def record_outcome(self, auth: str | None, body: bytes) -> dict[str, Any]:
        """Record what happened when an action ran."""
        principal, report = self._outcome_report(auth, body)
        if principal.role == "agent":
            self.outcome_for_own_agent(principal, report)
        try:
            return self.charter.record_outcome(
                report.decision_id,
                success=report.success,
                error=report.error,
                duration_ms=report.duration_ms,
                result_digest=report.result_digest,
            )
        except CharterError as exc:
            raise from_charter_error(exc) from None

    async def record_outcome_async(self, auth: str | None, body: bytes) -> dict[str, Any]:
        """`record_outcome` on the event loop, awaiting the commit without a worker thread.

        Only an agent key's check, which reads the decision and may record a mismatch,
        runs in a worker thread.
        """
        principal, report = self._outcome_report(auth, body)
        if principal.role == "agent":
            await run_in_threadpool(self.outcome_for_own_agent, principal, report)
        try:
            record = getattr(self.charter, "record_outcome_async", None)
            if record is None:  # a gateway without the async variant: a worker thread waits
                return await run_in_threadpool(
                    functools.partial(
                        self.charter.record_outcome,
                        report.decision_id,
                        success=report.success,
                        error=report.error,
                        duration_ms=report.duration_ms,
                        result_digest=report.result_digest,
                    )
                )
            answer: dict[str, Any] = await record(
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
        """Whether the bundle is loaded and the store answers and is writable."""
        checks: dict[str, str] = {}
        checks["bundle"] = "ok" if self.charter.bundle is not None else "not loaded"
        try:
            self.charter.store.head()
        except Exception as exc:  # any failure means not ready; the check says why
            checks["store"] = f"unreadable: {exc}"
        else:
            checks["store"] = _writable(self.charter.store)
        checks["ledger_writer"] = self.charter.writer_problem() or "ok"
        return all(v == "ok" for v in checks.values()), checks


def _writable(store: object) -> str:
    """Whether a SQLite store's file and folder can be written; "ok" or why not."""
    engine = getattr(store, "engine", None)
    path = getattr(getattr(engine, "url", None), "database", None)
    if not isinstance(path, str) or not path or path == ":memory:":
        return "ok"
    folder = os.path.dirname(os.path.abspath(path)) or "."
    for target in (path, folder):
        if os.path.exists(target) and not os.access(target, os.W_OK):
            return f"not writable: `{target}`"
    if not os.path.exists(path):
        return f"missing: `{path}`"
    return "ok"
