"""The domain's value types: requests, agents, their state, and decisions. No I/O.

Every type here converts to and from plain JSON (`to_json` / `from_json`), because the
ledger stores them canonically encoded and replay reads them back: a value that does not
survive that round trip exactly could not be replayed byte for byte.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from charter.canonical import content_hash
from charter.errors import RequestInvalid

__all__ = [
    "ACTION_NAME",
    "AGENT_FIELDS",
    "CONTEXT_FIELDS",
    "MAX_DEPTH",
    "MAX_ID",
    "REQUEST_FIELDS",
    "ActionRequest",
    "AgentProfile",
    "AgentState",
    "BreakerState",
    "BudgetUsage",
    "Decision",
    "Factor",
    "Halt",
    "Reason",
    "RouteRef",
    "Verdict",
    "check_idempotency_key",
    "json_value",
]

#: A dotted action name such as `payments.refund`: lowercase words of letters, digits, `_`, `-`.
ACTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$")

#: The fields an action request's `context` may carry, and what each holds.
CONTEXT_FIELDS: Mapping[str, str] = {
    "confidence": "the agent's stated confidence, a number from 0 to 1",
    "environment": "where the action runs, e.g. `prod` or `staging`",
    "rationale": "why the agent wants to act, in its own words",
    "alternatives": "a list of the other options the agent considered",
    "data_sources": "a list of {name, age_seconds} naming the data the agent relied on",
    "labels": "free-form string, number or boolean values for policies to read",
}

#: How many levels of objects and lists may nest inside a request's field: `args` itself
#: is level 0, and a list or object below level 32 is refused. The HTTP body reader applies
#: the same limit (one level more, for the body's own object), so a body it accepted needs
#: no second walk here.
MAX_DEPTH = 32

#: The most characters an id (agent, action, idempotency key, trace id, ...) may have.
MAX_ID = 256

_MAX_SAFE_INTEGER = 2**53 - 1


class Verdict(StrEnum):
    """What Charter tells the agent, from most permissive to least."""

    ALLOW = "allow"
    REQUIRE_APPROVAL = "require_approval"
    ESCALATE = "escalate"
    DENY = "deny"


def json_value(value: Any, path: str = "") -> Any:
    """A normalised copy of a JSON value, as Charter decides and records it.

    Raises:
        RequestInvalid: the value holds something JSON cannot carry faithfully.
    """
    return _json_copy(value, path)


class _Unusual(Exception):
    """A value `_plain_copy` leaves to `_json_copy`, which copies it or names the problem."""


def _plain_copy(value: Any, depth: int) -> Any:
    """`_json_copy` of the common case (exact JSON types, well within limits), unlocated.

    A request's every value passes through here, so the path that `_json_copy` builds for
    each in case it must name it is left out. Anything unusual raises `_Unusual`, and the
    caller starts again with `_json_copy`.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
            return value
        raise _Unusual
    if kind is float:
        if not math.isfinite(value):
            raise _Unusual
        return int(value) if value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER else value
    if depth > MAX_DEPTH:  # a container past the limit: `_json_copy` names it
        raise _Unusual
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _Unusual
            kind = type(item)
            out[key] = item if kind is str or kind is bool else _plain_copy(item, depth + 1)
        return out
    if kind is list or kind is tuple:
        return [_plain_copy(item, depth + 1) for item in value]
    raise _Unusual


def _copied(value: Any, path: str) -> Any:
    """`_json_copy(value, path)`, by the fast path when it can be taken."""
    try:
        return _plain_copy(value, 0)
    except _Unusual:
        return _json_copy(value, path)


def _json_copy(value: Any, path: str, depth: int = 0) -> Any:
    """A copy of a JSON value, refusing what JSON cannot carry faithfully.

    NaN, infinities, unsafe integers, non-string keys and lists or objects nested deeper
    than `MAX_DEPTH` are errors. Whole-number floats become ints: canonical JSON writes 5.0
    as 5, so the ledger keeps an int, and deciding on the int live too makes replay see
    exactly what the engine saw.
    """
    if isinstance(value, str | bool) or value is None:
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise RequestInvalid(
                path, "integers beyond 2^53-1 lose precision in JSON; send them as strings"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RequestInvalid(path, "numbers must be finite (no NaN or Infinity)")
        return int(value) if value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER else value
    if isinstance(value, list | tuple | dict) and depth > MAX_DEPTH:
        raise RequestInvalid(path, f"nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, list | tuple):
        return [_json_copy(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise RequestInvalid(path, f"keys must be strings, got `{key!r}`")
            out[key] = _json_copy(item, f"{path}.{key}", depth + 1)
        return out
    raise RequestInvalid(path, f"`{type(value).__name__}` is not a JSON value")


def _string(obj: Mapping[str, Any], key: str, *, required: bool, path: str = "") -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise RequestInvalid(f"{path}{key}", "is required")
        return None
    if not isinstance(value, str):
        raise RequestInvalid(f"{path}{key}", f"must be a string, got {_json_type(value)}")
    if required and not value.strip():
        raise RequestInvalid(f"{path}{key}", "must not be empty")
    if len(value) > MAX_ID and key != "rationale":
        raise RequestInvalid(f"{path}{key}", f"longer than {MAX_ID} characters")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"`{type(value).__name__}`"


def _validate_context(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RequestInvalid("context", f"must be an object, got {_json_type(raw)}")
    context: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:  # `null` means "not said": the same as leaving the field out
            continue
        if key not in CONTEXT_FIELDS:
            known = ", ".join(sorted(CONTEXT_FIELDS))
            raise RequestInvalid(
                f"context.{key}",
                f"unknown context field; known fields are {known} "
                "(put free-form values under `context.labels`)",
            )
        context[key] = value
    conf = context.get("confidence")
    if conf is not None and (
        isinstance(conf, bool) or not isinstance(conf, int | float) or not 0 <= conf <= 1
    ):
        raise RequestInvalid("context.confidence", "must be a number from 0 to 1")
    for key in ("environment", "rationale"):
        if key in context:
            _string(context, key, required=False, path="context.")
    alternatives = context.get("alternatives")
    if alternatives is not None and (
        not isinstance(alternatives, list) or not all(isinstance(a, str) for a in alternatives)
    ):
        raise RequestInvalid("context.alternatives", "must be a list of strings")
    sources = context.get("data_sources")
    if sources is not None:
        if not isinstance(sources, list):
            raise RequestInvalid("context.data_sources", "must be a list")
        for i, source in enumerate(sources):
            where = f"context.data_sources[{i}]"
            if not isinstance(source, dict):
                raise RequestInvalid(where, "must be an object with `name` and `age_seconds`")
            _string(source, "name", required=True, path=f"{where}.")
            age = source.get("age_seconds")
            if age is not None and (
                isinstance(age, bool) or not isinstance(age, int | float) or age < 0
            ):
                raise RequestInvalid(f"{where}.age_seconds", "must be a number >= 0")
            for extra in source:
                if extra not in ("name", "age_seconds"):
                    raise RequestInvalid(f"{where}.{extra}", "unknown field")
    labels = context.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            raise RequestInvalid("context.labels", "must be an object")
        for key, value in labels.items():
            if isinstance(value, dict | list) or value is None:
                raise RequestInvalid(f"context.labels.{key}", "must be a string, number or boolean")
    return context


#: The fields of an action request; `agent` and `action` are required.
REQUEST_FIELDS = ("agent", "action", "args", "context", "idempotency_key", "trace_id")
_REQUEST_FIELDS = frozenset(REQUEST_FIELDS)


def check_idempotency_key(value: object, field: str = "idempotency_key") -> str:
    """An idempotency key as given, if it is one: 1 to `MAX_ID` printable characters.

    The one rule for a key, wherever it comes from (a request's field, an HTTP header).

    Raises:
        RequestInvalid: naming `field`, when the value is not such a string.
    """
    if (
        type(value) is not str
        or not value.strip()
        or len(value) > MAX_ID
        or not value.isprintable()
    ):
        raise RequestInvalid(field, f"must be 1 to {MAX_ID} printable characters")
    return value


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """What an agent proposes to do.

    `args` are the action's arguments, checked against the action's contract by the policy;
    `context` is what the agent says about its situation (see `CONTEXT_FIELDS`).
    """

    agent: str
    action: str
    args: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    trace_id: str | None = None
    # `payload_digest`, once computed. Not an init field: `dataclasses.replace` (which may
    # change the arguments) starts a copy without it rather than carry a stale one.
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any, *, trusted: bool = False) -> ActionRequest:
        """Build a request from decoded JSON, naming the first field that is wrong.

        Args:
            obj: the decoded request.
            trusted: `obj` comes straight from a strict JSON parser that refused lists and
                objects nested past `MAX_DEPTH` and non-finite numbers, turned whole-number
                floats into ints, and met no integer beyond 2^53-1; nothing else holds it.
                Its `args` and `context` are then taken as they are instead of copied and
                walked again. Every field check runs either way.
        """
        if not isinstance(obj, dict):
            raise RequestInvalid("", f"a request must be a JSON object, got {_json_type(obj)}")
        for key in obj:
            if key not in _REQUEST_FIELDS:
                raise RequestInvalid(
                    str(key), f"unknown field; a request has {', '.join(sorted(_REQUEST_FIELDS))}"
                )
        agent = _string(obj, "agent", required=True)
        action = _string(obj, "action", required=True)
        assert agent is not None
        assert action is not None
        if not ACTION_NAME.match(action):
            raise RequestInvalid(
                "action", f"`{action}` is not a dotted action name like `payments.refund`"
            )
        args = obj.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise RequestInvalid("args", f"must be an object, got {_json_type(args)}")
        context = obj.get("context", {})
        if context is None:
            context = {}
        if not trusted:
            args = _copied(args, "args")
            context = _copied(context, "context")
        context = _validate_context(context)
        key = obj.get("idempotency_key")
        if key is not None:
            key = check_idempotency_key(key)
        trace = _string(obj, "trace_id", required=False) if "trace_id" in obj else None
        return cls(agent, action, args, context, key, trace)

    @property
    def payload_digest(self) -> str:
        """What an idempotency key is bound to: the content hash of the request less its ids.

        Computed once per request and kept: a keyed request is compared under its key
        several times on its way to the ledger.
        """
        digest = self._digest
        if digest is None:
            digest = content_hash(
                {
                    "agent": self.agent,
                    "action": self.action,
                    "args": dict(self.args),
                    "context": dict(self.context),
                }
            )
            object.__setattr__(self, "_digest", digest)  # a cache, not state: frozen anyway
        return digest

    def to_json(self) -> dict[str, Any]:
        """The request as plain JSON; optional ids appear only when set."""
        out: dict[str, Any] = {
            "agent": self.agent,
            "action": self.action,
            "args": dict(self.args),
            "context": dict(self.context),
        }
        if self.idempotency_key is not None:
            out["idempotency_key"] = self.idempotency_key
        if self.trace_id is not None:
            out["trace_id"] = self.trace_id
        return out


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """Who an agent is: its role, the person who owns it, its model, its default autonomy."""

    id: str
    role: str
    owner: str
    model_id: str
    model_version: str
    autonomy: int

    def to_json(self) -> dict[str, Any]:
        """The profile as the `agent` variable that policy conditions read."""
        return {
            "id": self.id,
            "role": self.role,
            "owner": self.owner,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "autonomy": self.autonomy,
        }


#: The fields of the `agent` variable in conditions.
AGENT_FIELDS = ("id", "role", "owner", "model_id", "model_version", "autonomy")


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """What an agent has already spent of one budget in the budget's current window."""

    count: int = 0
    risk: int = 0

    def to_json(self) -> dict[str, int]:
        """The usage as plain JSON."""
        return {"count": self.count, "risk": self.risk}


@dataclass(frozen=True, slots=True)
class Halt:
    """A kill switch in force: everything (`all`), one agent, one action, or one role."""

    scope: str
    target: str | None = None
    reason: str = ""

    def covers(self, request: ActionRequest, role: str | None = None) -> bool:
        """Whether this halt stops the request (of an agent in `role`, if known)."""
        return self.applies_to(request.agent, request.action, role)

    def applies_to(self, agent: str, action: str, role: str | None = None) -> bool:
        """Whether this halt stops `agent` (in `role`) doing `action`: a decision or a grant.

        A halt of a role stops no agent whose role is unknown here; such an agent has
        no envelope either, so the policy denies what it asks anyway.
        """
        if self.scope == "all":
            return True
        if self.scope == "agent":
            return self.target == agent
        if self.scope == "role":
            return role is not None and self.target == role
        return self.target == action

    def to_json(self) -> dict[str, Any]:
        """The halt as plain JSON."""
        return {"scope": self.scope, "target": self.target, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A circuit breaker that is not closed, as a decision it covers sees it.

    `status` is `open` until `until`, then `half_open`: `trials_left` more actions are
    decided as if it were closed, and it closes once they all succeed. A half-open breaker
    with no trials left still holds the action back, as an open one does. `agent` is None
    for a breaker shared by every agent; `generation` counts the circuit's transitions.
    """

    id: str
    action: str
    agent: str | None
    status: str
    since: str
    until: str
    trials_left: int
    then: str
    reason: str
    failures: int
    sample: int
    generation: int

    @property
    def holds(self) -> bool:
        """Whether the breaker holds this decision back (open, or no trial left)."""
        return self.status == "open" or self.trials_left <= 0

    def to_json(self) -> dict[str, Any]:
        """The breaker as plain JSON."""
        return {
            "id": self.id,
            "action": self.action,
            "agent": self.agent,
            "status": self.status,
            "since": self.since,
            "until": self.until,
            "trials_left": self.trials_left,
            "then": self.then,
            "reason": self.reason,
            "failures": self.failures,
            "sample": self.sample,
            "generation": self.generation,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BreakerState:
        """Rebuild a recorded breaker."""
        return cls(
            id=obj["id"],
            action=obj["action"],
            agent=obj.get("agent"),
            status=obj["status"],
            since=obj["since"],
            until=obj["until"],
            trials_left=int(obj["trials_left"]),
            then=obj["then"],
            reason=obj.get("reason", ""),
            failures=int(obj["failures"]),
            sample=int(obj["sample"]),
            generation=int(obj["generation"]),
        )


@dataclass(frozen=True, slots=True)
class AgentState:
    """The part of a decision's input that changes over time for one agent.

    It is recorded beside every decision, so replay gives the engine exactly what it saw.
    `autonomy` overrides the agent's default level when a person or monitor changed it;
    `profile`, when set, is the agent as the registry holds it, in place of the bundle's.
    `breakers` are the breakers over this agent's action that are not closed.
    """

    autonomy: int | None = None
    budgets: Mapping[str, BudgetUsage] = field(default_factory=dict)
    halts: tuple[Halt, ...] = ()
    profile: AgentProfile | None = None
    breakers: tuple[BreakerState, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The state as plain JSON, in a stable shape (`profile`, `breakers` only when set)."""
        budgets, halts = self.budgets, self.halts  # most decisions record neither
        out: dict[str, Any] = {
            "autonomy": self.autonomy,
            "budgets": {k: budgets[k].to_json() for k in sorted(budgets)} if budgets else {},
            "halts": [h.to_json() for h in halts] if halts else [],
        }
        if self.profile is not None:
            out["profile"] = self.profile.to_json()
        if self.breakers:
            out["breakers"] = [b.to_json() for b in self.breakers]
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AgentState:
        """Rebuild a recorded state."""
        budgets = {
            k: BudgetUsage(count=int(v["count"]), risk=int(v["risk"]))
            for k, v in (obj.get("budgets") or {}).items()
        }
        halts = tuple(
            Halt(scope=h["scope"], target=h.get("target"), reason=h.get("reason", ""))
            for h in obj.get("halts") or ()
        )
        raw = obj.get("profile")
        profile = (
            AgentProfile(
                raw["id"],
                raw["role"],
                raw["owner"],
                raw["model_id"],
                raw["model_version"],
                int(raw["autonomy"]),
            )
            if raw
            else None
        )
        breakers = tuple(BreakerState.from_json(b) for b in obj.get("breakers") or ())
        return cls(
            autonomy=obj.get("autonomy"),
            budgets=budgets,
            halts=halts,
            profile=profile,
            breakers=breakers,
        )


@dataclass(frozen=True, slots=True)
class Factor:
    """A named risk factor that matched, and the points it added to the score."""

    id: str
    points: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The factor as plain JSON."""
        return {"id": self.id, "points": self.points, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Reason:
    """One step of the decision that fired, in words a reviewer understands.

    `code` is stable (e.g. `outside_envelope`, `deny_rule`, `over_autonomy`); `rule` names
    the rule, factor or budget behind it when there is one.
    """

    code: str
    message: str
    rule: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The reason as plain JSON."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.rule is not None:
            out["rule"] = self.rule
        return out


@dataclass(frozen=True, slots=True)
class RouteRef:
    """Where a decision that needs people goes: reviewer groups, quorum, SLA, timeout."""

    id: str
    groups: tuple[str, ...]
    approvals: int
    sla_seconds: int
    on_timeout: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RouteRef:
        """Rebuild a route from `to_json`'s form."""
        return cls(
            obj["id"],
            tuple(obj["groups"]),
            int(obj["approvals"]),
            int(obj["sla_seconds"]),
            obj["on_timeout"],
        )

    def to_json(self) -> dict[str, Any]:
        """The route as plain JSON."""
        return {
            "id": self.id,
            "groups": list(self.groups),
            "approvals": self.approvals,
            "sla_seconds": self.sla_seconds,
            "on_timeout": self.on_timeout,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one action request, with everything that explains it.

    A decision is a pure function of (request, bundle, agent state, clock); its JSON form
    is what the ledger records and what replay compares byte for byte.
    """

    verdict: Verdict
    risk: int
    factors: tuple[Factor, ...]
    reasons: tuple[Reason, ...]
    policy_version: str
    agent: str
    action: str
    role: str | None
    autonomy_level: int | None
    autonomy_max_risk: int | None
    ceiling: int | None
    route: RouteRef | None = None
    runbook: str | None = None

    @property
    def rules(self) -> tuple[str, ...]:
        """The ids of every rule, factor or budget named in the reasons, in order."""
        seen: dict[str, None] = {}
        for reason in self.reasons:
            if reason.rule is not None:
                seen.setdefault(reason.rule, None)
        return tuple(seen)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Decision:
        """Rebuild a decision from its JSON form (as the ledger records it)."""
        route = obj.get("route")
        return cls(
            verdict=Verdict(obj["verdict"]),
            risk=int(obj["risk"]),
            factors=tuple(Factor(f["id"], int(f["points"]), f["reason"]) for f in obj["factors"]),
            reasons=tuple(Reason(r["code"], r["message"], r.get("rule")) for r in obj["reasons"]),
            policy_version=obj["policy_version"],
            agent=obj["agent"],
            action=obj["action"],
            role=obj.get("role"),
            autonomy_level=obj.get("autonomy_level"),
            autonomy_max_risk=obj.get("autonomy_max_risk"),
            ceiling=obj.get("ceiling"),
            route=RouteRef.from_json(route) if route else None,
            runbook=obj.get("runbook"),
        )

    def to_json(self) -> dict[str, Any]:
        """The decision as plain JSON, in the shape the ledger and the API use."""
        return {
            "verdict": self.verdict.value,
            "risk": self.risk,
            "factors": [f.to_json() for f in self.factors],
            "reasons": [r.to_json() for r in self.reasons],
            "policy_version": self.policy_version,
            "agent": self.agent,
            "action": self.action,
            "role": self.role,
            "autonomy_level": self.autonomy_level,
            "autonomy_max_risk": self.autonomy_max_risk,
            "ceiling": self.ceiling,
            "route": self.route.to_json() if self.route else None,
            "runbook": self.runbook,
        }
