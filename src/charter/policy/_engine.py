"""The decision: a pure function of (request, bundle, agent state, clock).

Nothing here reads the clock, the network, the disk or randomness; the caller passes in
everything, so the same inputs give the same decision byte for byte and the ledger can be
replayed. When the engine cannot decide (a condition errs), the answer is `deny`.

Precedence, as a truth table read top to bottom; the first row that holds sets the verdict,
and every row that holds is listed in the reasons:

| step | holds when                                                    | verdict          |
| ---- | ------------------------------------------------------------- | ---------------- |
| 1    | a halt covers the request                                     | deny             |
| 2    | unknown agent, action outside the envelope, contract broken,  | deny             |
|      | or an envelope condition is false                             |                  |
| -    | a condition could not be evaluated                            | deny             |
| 3    | a `deny` rule matches, or an open breaker says `deny`         | deny             |
| 4    | risk (sum of matched factors) is above the ceiling            | deny             |
| 5    | an `escalate` rule matches                                    | escalate         |
| 6    | a `require_approval` rule matches, risk is above the agent's  | require_approval |
|      | autonomy level, a budget would be overspent, or an open       |                  |
|      | breaker says `require_approval`                               |                  |
| 7    | none of the above                                             | allow            |

Steps 1 and 2 stop the evaluation: past them nothing else is meaningful. An allowed
decision under a half-open breaker with trials left is one of its trials (`breaker_trial`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import fastjsonschema

from charter.model import (
    ActionRequest,
    AgentProfile,
    AgentState,
    BreakerState,
    BudgetUsage,
    Decision,
    Factor,
    Reason,
    RouteRef,
    Verdict,
)
from charter.policy._bundle import BudgetRef, Bundle, Check, Plan
from charter.policy._conditions import VARIABLES

__all__ = ["decide", "format_seconds"]

_MAX_LISTED = 8
_MAX_REMEMBERED = 256  # decisions per plan: a few per agent and level in practice
# Read on every decision; a module global is a third of the cost of an enum class lookup.
_ALLOW = Verdict.ALLOW
_DENY = Verdict.DENY
_ESCALATE = Verdict.ESCALATE
_APPROVAL = Verdict.REQUIRE_APPROVAL
_BOOL = frozenset({bool})
_CONTEXT_DEFAULTS: dict[str, Any] = {"alternatives": [], "data_sources": [], "labels": {}}


def format_seconds(seconds: int) -> str:
    """A duration the way a person writes it: `90s`, `15m`, `4h`, `2d`."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _deny(
    request: ActionRequest,
    bundle: Bundle,
    profile: AgentProfile | None,
    level: int | None,
    reasons: Sequence[Reason],
) -> Decision:
    return Decision(
        verdict=Verdict.DENY,
        risk=0,
        factors=(),
        reasons=tuple(reasons),
        policy_version=bundle.version,
        agent=request.agent,
        action=request.action,
        role=profile.role if profile else None,
        autonomy_level=level,
        autonomy_max_risk=_level_risk(bundle, level) if level is not None else None,
        ceiling=bundle.ceiling,
    )


def _level_risk(bundle: Bundle, level: int) -> int:
    """The risk a level may take alone; an undefined level gets the nearest lower one.

    A level below every defined one may take no risk at all: unknown means less autonomy.
    """
    if level in bundle.levels:
        return bundle.levels[level]
    lower = [risk for lvl, risk in bundle.levels.items() if lvl <= level]
    return max(lower) if lower else -1


def _contract_errors(plan: Plan, args: Any, redacted: Iterable[str]) -> list[str]:
    """Readable contract violations, ignoring ones caused only by ledger redaction."""
    skip = [tuple(p.split(".")[1:]) for p in redacted if p.startswith("args.")]
    out = []
    validator = plan.explain_contract()
    for error in sorted(
        validator.iter_errors(args),
        key=lambda e: ([str(p) for p in e.path], str(e.validator), e.message),
    ):
        path = tuple(str(p) for p in error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [n for n in error.validator_value if n not in error.instance]
            if all(any((*path, n)[: len(s)] == s for s in skip) for n in missing):
                continue
        if any(path[: len(s)] == s for s in skip if s):
            continue
        where = "args" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path)
        out.append(f"`{where}`: {error.message}")
    return out


def _short(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no such field `{exc.args[0] if exc.args else ''}`"
    text = str(exc).split("\n")[0]
    first = text.split(". ")[0]
    return first.rstrip(".")


def _evaluate(
    plan: Plan, sources: Mapping[str, Any], everything: Callable[[], dict[str, Any]]
) -> tuple[list[bool], list[Reason]]:
    """Every condition's result, evaluated in one CEL call, and any errors by condition.

    When the one call fails, each condition is evaluated alone on the whole variables, so
    the error names the condition and says what CEL said about it.
    """
    if not plan.conditions:
        return [], []
    if plan.program is not None:
        try:
            results = plan.program.execute(_inputs(plan, sources))
        except Exception:
            results = None
        if isinstance(results, list) and set(map(type, results)) <= _BOOL:
            return results, []
    values: list[bool] = []
    errors: list[Reason] = []
    env = everything()
    for (owner, source), single in zip(plan.conditions, plan.singles, strict=True):
        try:
            value = single.execute(env) if single is not None else None
        except Exception as exc:
            problem = f"could not be evaluated: {_short(exc)}"
        else:
            if isinstance(value, bool):
                values.append(value)
                continue
            problem = f"must be true or false, not `{value!r}`"
        errors.append(
            Reason(
                "evaluation_error", f"{owner}: `{source}` {problem}", _owner_id(plan, len(values))
            )
        )
        values.append(False)
    return values, errors


def _owner_id(plan: Plan, slot: int) -> str | None:
    for check in plan.checks:
        if slot in check.slots:
            return check.id
    return None


def _fired(check: Check, values: Sequence[bool]) -> bool:
    slots = check.slots
    if len(slots) == 1:
        return values[slots[0]]
    return all(values[s] for s in slots)


def _sources(
    request: ActionRequest,
    profile: AgentProfile,
    level: int,
    now: dt.datetime,
    wanted: Iterable[str] = VARIABLES,
) -> dict[str, Any]:
    """The variables conditions read (those in `wanted`), each whole."""
    out: dict[str, Any] = {}
    for name in wanted:
        if name == "args":
            out["args"] = request.args
        elif name == "context":
            # Lists and maps default to empty so `exists`/`all` read naturally without `has`.
            out["context"] = {**_CONTEXT_DEFAULTS, **request.context}
        elif name == "action":
            out["action"] = request.action
        elif name == "now":
            # CEL's calendar functions read the offset they are given; decide in UTC so the
            # same instant written in any zone decides alike.
            out["now"] = now.astimezone(dt.UTC)
        else:
            agent = profile.to_json()
            agent["autonomy"] = level
            out["agent"] = agent
    return out


def _inputs(plan: Plan, sources: Mapping[str, Any]) -> dict[str, Any]:
    """The variables of the plan's flattened program: each field read, bound on its own."""
    env: dict[str, Any] = {}
    for var, field, name in plan.flat:
        value = sources[var]
        if field in value:
            env[name] = value[field]
    for var, field, name in plan.present:
        env[name] = field in sources[var]
    for var in plan.whole:
        env[var] = sources[var]
    return env


def decide(
    request: ActionRequest,
    bundle: Bundle,
    state: AgentState,
    now: dt.datetime,
    *,
    redacted: Iterable[str] = (),
) -> Decision:
    """Decide one action request.

    Args:
        request: what the agent proposes.
        bundle: the compiled policy to decide under.
        state: the agent's current autonomy override, budget usage and the halts in force.
        now: the decision's clock (timezone-aware); conditions read it as `now`.
        redacted: dotted paths a data rule removed from a recorded request; replay passes
            them so that a contract check does not fail on what the ledger never kept.

    Returns:
        The decision, with every step that fired among its reasons.
    """
    profile = state.profile or bundle.agents.get(request.agent)
    role = profile.role if profile is not None else None
    halts = [h for h in state.halts if h.covers(request, role)] if state.halts else None
    level = None
    if profile is not None:
        level = state.autonomy if state.autonomy is not None else profile.autonomy
    if halts:
        reasons = [
            Reason(
                "halted",
                f"halted ({h.scope}{' ' + h.target if h.target else ''})"
                + (f": {h.reason}" if h.reason else ""),
            )
            for h in halts
        ]
        return _deny(request, bundle, profile, level, reasons)
    if profile is None or level is None:
        unknown = Reason("unknown_agent", f"agent `{request.agent}` is not defined in the policy")
        return _deny(request, bundle, None, None, [unknown])
    plan = bundle.plan_for(request.agent, profile.role, request.action)
    if plan is None:
        allowed = sorted(bundle.roles.get(profile.role, ()))
        listed = ", ".join(f"`{a}`" for a in allowed[:_MAX_LISTED])
        more = ", ..." if len(allowed) > _MAX_LISTED else ""
        outside = Reason(
            "outside_envelope",
            f"role `{profile.role}` may not take `{request.action}`; "
            f"its envelope allows {listed}{more}",
        )
        return _deny(request, bundle, profile, level, [outside])
    validate = plan.validate
    if redacted:
        top = frozenset(p[5:] for p in redacted if p.startswith("args.") and p.count(".") == 1)
        if top:
            validate = plan.validator_without(top)
    try:
        validate(dict(request.args))
    except fastjsonschema.JsonSchemaException:
        broken = _contract_errors(plan, dict(request.args), redacted)
        if broken:
            reasons = [
                Reason("contract", f"arguments break the contract of `{request.action}`: {e}")
                for e in broken[:_MAX_LISTED]
            ]
            return _deny(request, bundle, profile, level, reasons)
    sources = _sources(request, profile, level, now, plan.variables)
    values, errors = _evaluate(plan, sources, lambda: _sources(request, profile, level, now))
    if errors or plan.budgets or state.breakers:
        return _combine(request, bundle, state, profile, level, plan, values, errors)
    # Without errors or budgets, a plan's decision under one bundle depends on nothing but
    # this key: the same immutable answer is combined once and handed out again.
    key = (*values, level, profile.role, request.agent, request.action)
    known = plan.decided.get(key)
    if known is not None and known[0] is bundle:
        return known[1]
    decision = _combine(request, bundle, state, profile, level, plan, values, errors)
    if len(plan.decided) < _MAX_REMEMBERED:
        plan.decided[key] = (bundle, decision)
    return decision


def _combine(
    request: ActionRequest,
    bundle: Bundle,
    state: AgentState,
    profile: AgentProfile,
    level: int,
    plan: Plan,
    values: Sequence[bool],
    errors: Sequence[Reason],
) -> Decision:
    """Apply the precedence to evaluated conditions (see the module's truth table)."""
    envelope = plan.envelope_checks
    if errors and any(e.rule == c.id for e in errors for c in envelope):
        return _deny(request, bundle, profile, level, errors)
    for check in envelope:
        if not _fired(check, values):
            outside = Reason("outside_envelope", f"outside the envelope: {check.reason}", check.id)
            return _deny(request, bundle, profile, level, [outside])
    if errors:
        return _deny(request, bundle, profile, level, errors)
    factors = tuple(
        [Factor(c.id, c.points, c.reason) for c in plan.factor_checks if _fired(c, values)]
    )
    risk = 0
    for factor in factors:
        risk += factor.points
    max_risk = _level_risk(bundle, level)
    reasons: list[Reason] = []
    verdict = _ALLOW
    route: RouteRef | None = None
    runbook: str | None = None
    for check in plan.deny_checks:
        if _fired(check, values):
            reasons.append(Reason("deny_rule", check.reason, check.id))
            verdict = _DENY
    for breaker in state.breakers:
        if breaker.then == "deny" and breaker.holds:
            reasons.append(Reason("breaker_open", _breaker_message(breaker), breaker.id))
            verdict = _DENY
    if risk > bundle.ceiling:
        reasons.append(
            Reason(
                "risk_ceiling",
                f"risk {risk} is above the ceiling of {bundle.ceiling}: "
                "no agent may take this alone or with approval",
            )
        )
        verdict = _DENY
    for check in plan.escalate_checks:
        if _fired(check, values):
            reasons.append(Reason("escalate_rule", check.reason, check.id))
            if verdict is _ALLOW:
                verdict, route, runbook = _ESCALATE, check.route, check.runbook
    for check in plan.approval_checks:
        if _fired(check, values):
            reasons.append(Reason("approval_rule", check.reason, check.id))
            if verdict is _ALLOW:
                verdict, route = _APPROVAL, check.route
    if risk > max_risk:
        reasons.append(
            Reason(
                "over_autonomy",
                f"risk {risk} is above the {max(max_risk, 0)} that autonomy level {level} "
                "may take alone",
            )
        )
        if verdict is _ALLOW:
            verdict, route = _APPROVAL, plan.route
    for budget in plan.budgets:
        message = _budget_spent(budget, state.budgets.get(budget.id), risk)
        if message is not None:
            reasons.append(Reason("budget_spent", message, budget.id))
            if verdict is _ALLOW:
                verdict, route = _APPROVAL, plan.route
    for breaker in state.breakers:
        if breaker.then != "deny" and breaker.holds:
            reasons.append(Reason("breaker_open", _breaker_message(breaker), breaker.id))
            if verdict is _ALLOW:
                verdict, route = _APPROVAL, plan.route
    if verdict is _ALLOW:
        for breaker in state.breakers:
            if not breaker.holds:
                reasons.append(
                    Reason(
                        "breaker_trial",
                        f"a trial of breaker `{breaker.id}`, half-open since {breaker.until} "
                        f"({breaker.trials_left} trial{'s' if breaker.trials_left != 1 else ''}"
                        " left): its outcome decides whether the breaker closes",
                        breaker.id,
                    )
                )
        reasons.append(
            Reason(
                "allowed",
                f"within the envelope of role `{profile.role}`; risk {risk} is within the "
                f"{max_risk} that autonomy level {level} may take alone",
            )
        )
    return Decision(
        verdict,
        risk,
        factors,
        tuple(reasons),
        bundle.version,
        request.agent,
        request.action,
        profile.role,
        level,
        max_risk,
        bundle.ceiling,
        route if verdict is _APPROVAL or verdict is _ESCALATE else None,
        runbook,
    )


def _breaker_message(breaker: BreakerState) -> str:
    """Why a breaker holds an action back, with the figures that tripped it."""
    figures = f"{breaker.failures} of {breaker.sample} outcomes failed"
    if breaker.status == "open":
        return (
            f"breaker `{breaker.id}` is open since {breaker.since} ({figures}): "
            f"{breaker.reason}; trials from {breaker.until}"
        )
    return (
        f"breaker `{breaker.id}` is half-open and its trials are under way "
        f"(opened {breaker.since}, {figures}): {breaker.reason}"
    )


def _budget_spent(budget: BudgetRef, used: BudgetUsage | None, risk: int) -> str | None:
    """Why this action would overspend the budget, or None when it fits."""
    count = used.count if used else 0
    spent = used.risk if used else 0
    if budget.max_count is not None and count + 1 > budget.max_count:
        window = format_seconds(budget.window_seconds)
        return f"{budget.reason}: {count} of {budget.max_count} actions used in {window}"
    if budget.max_risk is not None and spent + risk > budget.max_risk:
        window = format_seconds(budget.window_seconds)
        return (
            f"{budget.reason}: {spent} of {budget.max_risk} risk used in {window}, "
            f"this action adds {risk}"
        )
    return None
