"""Compiling a checked bundle into what the engine runs: one plan per role and action.

A request can only meet the rules of its own role and action, so the bundle is indexed
once, here: every rule, factor and envelope condition that could apply to a (role,
action) pair is compiled into a single CEL program that returns all their results at once.
One program per request, not one per rule, is what keeps a decision in microseconds:
most of CEL's cost is converting the request's data, and this way it is paid once.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import fastjsonschema
import jsonschema

from charter.canonical import canonical_bytes, content_hash
from charter.errors import PolicyInvalid, Problem
from charter.model import AgentProfile, Decision, RouteRef
from charter.monitors import AlertRule, AutonomyRule, MonitorConfig
from charter.policy._conditions import (
    CelProgram,
    compile_condition,
    flat_name,
    flatten,
    impossible_fields,
    read_fields,
    unknown_variables,
    used_variables,
)
from charter.policy._source import Node, SourceFile, read_bundle_files
from charter.policy._spec import (
    BreakerSpec,
    BundleSpec,
    Cond,
    RoleSpec,
    Selector,
    WebhookSpec,
    parse_bundle,
)
from charter.policy._spec_permissions import DEFAULT_PERMISSIONS
from charter.policy._spec_watch import runbook_problems

__all__ = ["Bundle", "Check", "DataRule", "Plan", "bundle_from_content", "load_bundle"]

#: The format of a bundle's canonical content; bumped if the content's shape changes.
CONTENT_FORMAT = 1

_MAX_CACHED_ACTIONS = 1024


@dataclass(frozen=True, slots=True)
class Check:
    """One condition-bearing item of a plan: an envelope condition, rule or factor.

    `slots` index the plan program's result list: the item fires when all are true.
    """

    kind: str  # "envelope", "deny", "escalate", "require_approval", "factor"
    id: str
    reason: str
    slots: tuple[int, ...]
    points: int = 0
    route: RouteRef | None = None
    runbook: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetRef:
    """A budget that applies to a plan."""

    id: str
    window_seconds: int
    max_count: int | None
    max_risk: int | None
    reason: str


@dataclass(slots=True)
class Plan:
    """Everything the engine needs for one (role, action), compiled once."""

    role: str
    action: str
    validate: Callable[[Any], Any]
    schema: Mapping[str, Any]
    checks: tuple[Check, ...]
    conditions: tuple[tuple[str, str], ...]  # (owner description, CEL source) by slot
    program: CelProgram | None
    variables: frozenset[str]
    #: (variable, field, CEL name) bound one by one for the flattened program.
    flat: tuple[tuple[str, str, str], ...]
    #: (variable, field, CEL name) bound to whether the field is present.
    present: tuple[tuple[str, str, str], ...]
    #: variables passed to the program whole.
    whole: tuple[str, ...]
    budgets: tuple[BudgetRef, ...]
    route: RouteRef | None
    singles: list[CelProgram | None] = field(default_factory=list)
    #: The breakers watching this plan's outcomes, in bundle order.
    breakers: tuple[BreakerSpec, ...] = ()
    #: Seconds the action may run before its outcome is overdue; None: never overdue.
    timeout: int | None = None

    def of_kind(self, kind: str) -> tuple[Check, ...]:
        """The plan's checks of one kind, in bundle order (cached: the engine asks per call)."""
        cached = self.kinds.get(kind)
        if cached is None:
            cached = self.kinds[kind] = tuple(c for c in self.checks if c.kind == kind)
        return cached

    kinds: dict[str, tuple[Check, ...]] = field(default_factory=dict)
    relaxed: dict[frozenset[str], Callable[[Any], Any]] = field(default_factory=dict)
    explainer: Any = None
    #: Decisions the engine already combined, with the bundle they were combined under, by
    #: everything else they depend on (see `decide`).
    decided: dict[tuple[Any, ...], tuple[Bundle, Decision]] = field(
        default_factory=dict, repr=False, compare=False
    )
    # `of_kind` of each kind the engine applies, split once: it reads them on every request.
    envelope_checks: tuple[Check, ...] = field(init=False, repr=False)
    factor_checks: tuple[Check, ...] = field(init=False, repr=False)
    deny_checks: tuple[Check, ...] = field(init=False, repr=False)
    escalate_checks: tuple[Check, ...] = field(init=False, repr=False)
    approval_checks: tuple[Check, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.envelope_checks = self.of_kind("envelope")
        self.factor_checks = self.of_kind("factor")
        self.deny_checks = self.of_kind("deny")
        self.escalate_checks = self.of_kind("escalate")
        self.approval_checks = self.of_kind("require_approval")

    def explain_contract(self) -> Any:
        """A `jsonschema` validator that lists every violation (built on first use)."""
        if self.explainer is None:
            self.explainer = jsonschema.Draft7Validator(self.schema)
        return self.explainer

    def validator_without(self, fields: frozenset[str]) -> Callable[[Any], Any]:
        """The contract with top-level `fields` optional and unconstrained (cached).

        Replay checks a recorded request whose personal data a data rule removed or
        replaced; the live decision already checked those fields, so they are not held
        against the record.
        """
        cached = self.relaxed.get(fields)
        if cached is None:
            schema = json.loads(json.dumps(self.schema))
            if isinstance(schema.get("required"), list):
                schema["required"] = [r for r in schema["required"] if r not in fields]
            props = schema.get("properties")
            if isinstance(props, dict):
                for name in fields & props.keys():
                    props[name] = {}
            cached = self.relaxed[fields] = fastjsonschema.compile(schema)
        return cached


@dataclass(frozen=True, slots=True)
class DataRule:
    """A field of the request that the ledger must not store as sent."""

    path: tuple[str, ...]
    actions: tuple[str, ...]
    store: str


@dataclass(frozen=True, slots=True)
class Bundle:
    """A compiled, immutable policy bundle; its `version` is the hash of its content."""

    version: str
    content: Mapping[str, Any]
    agents: Mapping[str, AgentProfile]
    roles: Mapping[str, tuple[str, ...]]
    levels: Mapping[int, int]
    ceiling: int
    routes: Mapping[str, RouteRef]
    data_rules: tuple[DataRule, ...]
    runbooks: Mapping[str, str]
    plans: Mapping[tuple[str, str], Plan]
    agent_plans: Mapping[tuple[str, str], Plan]
    rule_ids: tuple[str, ...]
    spec: BundleSpec = field(repr=False)
    #: `data_rules_for`'s answers by action; a bundle never changes, so they never go stale.
    rules_by_action: dict[str, tuple[DataRule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def plan_for(self, agent: str, role: str, action: str) -> Plan | None:
        """The plan a request runs, or None when the action is outside the role's envelope."""
        return self.agent_plans.get((agent, action)) or self.plans.get((role, action))

    @property
    def monitors(self) -> MonitorConfig:
        """What the monitors check (the `monitors` section, or the defaults)."""
        return self.spec.watch.monitors or MonitorConfig()

    @property
    def alerts(self) -> tuple[AlertRule, ...]:
        """The alert rules, in bundle order."""
        return tuple(self.spec.watch.alerts)

    @property
    def autonomy_rules(self) -> tuple[AutonomyRule, ...]:
        """The autonomy controller's rules, in bundle order."""
        return tuple(self.spec.watch.autonomy_rules)

    def alert_webhooks(self, alert_id: str) -> tuple[WebhookSpec, ...]:
        """The webhooks alert `alert_id` notifies (none for an unknown alert)."""
        return tuple(self.spec.watch.alert_hooks.get(alert_id, ()))

    def may(self, operation: str) -> frozenset[str]:
        """The key roles this bundle lets do `operation` (`halt`, `resume`)."""
        permissions = self.spec.permissions
        if permissions is None:
            return DEFAULT_PERMISSIONS[operation]
        return permissions.roles[operation]

    def breaker(self, breaker_id: str) -> BreakerSpec | None:
        """The breaker with this id, or None when the bundle declares none such."""
        return next((b for b in self.spec.breakers if b.id == breaker_id), None)

    def data_rules_for(self, action: str) -> tuple[DataRule, ...]:
        """The data rules that apply to `action`, in bundle order (cached per action)."""
        rules = self.rules_by_action.get(action)
        if rules is None:
            rules = tuple(
                r
                for r in self.data_rules
                if not r.actions or any(fnmatch.fnmatchcase(action, p) for p in r.actions)
            )
            # Requests name any action they like; only so many are remembered.
            if len(self.rules_by_action) < _MAX_CACHED_ACTIONS:
                self.rules_by_action[action] = rules
        return rules

    def canonical_content(self) -> bytes:
        """The bytes whose hash is `version`; the ledger stores them to replay this bundle."""
        return canonical_bytes(dict(self.content))

    def webhooks(self, route_id: str) -> tuple[WebhookSpec, ...]:
        """The webhooks route `route_id` notifies, in bundle order (none for an unknown route).

        They live beside the route, not on `RouteRef`: a decision carries its route into the
        ledger byte for byte, and where notifications go is no part of what was decided.
        """
        route = self.spec.routes.get(route_id)
        return route.notify if route is not None else ()


def _matches(selector: Selector, role: str, action: str) -> bool:
    if selector.roles and role not in selector.roles:
        return False
    return not selector.actions or any(
        fnmatch.fnmatchcase(action, pattern) for pattern in selector.actions
    )


class _Compiler:
    def __init__(self, spec: BundleSpec, runbooks: Mapping[str, str], problems: list[Problem]):
        self.spec = spec
        self.runbooks = runbooks
        self.problems = problems
        self.compiled: dict[str, CelProgram | None] = {}

    def add(self, node: Node, code: str, message: str) -> None:
        self.problems.append(node.problem(code, message))

    # -- references --------------------------------------------------------------------

    def route(self, name: str | None, node: Node, what: str) -> RouteRef | None:
        if name is None:
            return None
        route = self.spec.routes.get(name)
        if route is None:
            known = ", ".join(f"`{r}`" for r in sorted(self.spec.routes)) or "none"
            self.add(
                node,
                "unknown_route",
                f"{what} names route `{name}`, which does not exist (routes: {known})",
            )
            return None
        return route.ref

    def check_references(self) -> None:
        spec = self.spec
        for agent_spec in spec.agents.values():
            agent, node = agent_spec.profile, agent_spec.node
            if agent.role and agent.role not in spec.roles:
                self.add(
                    node.child("role"),
                    "unknown_role",
                    f"agent `{agent.id}` has role `{agent.role}`, "
                    "which is not defined under `roles`",
                )
            if spec.autonomy is not None and agent.autonomy not in spec.autonomy.levels:
                self.add(
                    node.child("autonomy") if "autonomy" in node.value else node,
                    "unknown_level",
                    f"agent `{agent.id}` has autonomy level {agent.autonomy}, "
                    "which `autonomy.levels` does not define",
                )
        all_actions = {(r.name, a) for r in spec.roles.values() for a in r.envelope}
        selectors: list[tuple[str, Selector, Node]] = [
            *((f"rule `{r.id}`", r.selector, r.node) for r in spec.rules),
            *((f"risk factor `{f.id}`", f.selector, f.node) for f in spec.factors),
            *((f"budget `{b.id}`", b.selector, b.node) for b in spec.budgets),
            *((f"breaker `{b.id}`", b.selector, b.node) for b in spec.breakers),
        ]
        for what, selector, node in selectors:
            for role in selector.roles:
                if role not in spec.roles:
                    self.add(
                        node, "unknown_role", f"{what} names role `{role}`, which is not defined"
                    )
            for agent_id in selector.agents:
                if agent_id not in spec.agents:
                    self.add(
                        node,
                        "unknown_agent",
                        f"{what} names agent `{agent_id}`, which is not defined",
                    )
            for pattern in selector.actions:
                if not any(
                    fnmatch.fnmatchcase(a, pattern) and (not selector.roles or r in selector.roles)
                    for r, a in all_actions
                ):
                    self.add(
                        node,
                        "matches_nothing",
                        f"{what}: action pattern `{pattern}` matches no action "
                        "in the envelopes it applies to",
                    )
        seen: dict[str, str] = {}
        for kind, items in (
            ("rule", spec.rules),
            ("risk factor", spec.factors),
            ("budget", spec.budgets),
            ("breaker", spec.breakers),
        ):
            for item in items:
                if item.id in seen:
                    self.add(
                        item.node,
                        "duplicate_id",
                        f"id `{item.id}` of this {kind} is already used by a {seen[item.id]}",
                    )
                seen.setdefault(item.id, kind)
        for rid, route in spec.routes.items():
            if route.next_route is not None:
                self.route(
                    route.next_route,
                    route.node.child("on_timeout"),
                    f"the timeout of route `{rid}`",
                )
                if route.next_route == rid:
                    self.add(
                        route.node,
                        "route_loop",
                        f"route `{rid}` escalates to itself on timeout",
                    )
        for node, message in runbook_problems(spec.watch, self.runbooks):
            self.add(node, "unknown_runbook", message)
        for rule in spec.rules:
            if rule.runbook is not None:
                path = PurePosixPath(rule.runbook)
                if path.is_absolute() or ".." in path.parts or rule.runbook not in self.runbooks:
                    self.add(
                        rule.node.child("runbook"),
                        "unknown_runbook",
                        f"rule `{rule.id}` names runbook `{rule.runbook}`, "
                        "which is not a file under `runbooks/` in the bundle",
                    )
        if spec.autonomy is None:
            self.problems.append(
                Problem(
                    "(bundle)",
                    0,
                    0,
                    "missing_section",
                    "the bundle has no `autonomy` section: define `levels` and the `ceiling`",
                )
            )
        if not spec.roles:
            self.problems.append(
                Problem("(bundle)", 0, 0, "missing_section", "the bundle defines no `roles`")
            )

    # -- conditions --------------------------------------------------------------------

    def program(
        self,
        cond: Cond,
        what: str,
        contracts: Sequence[tuple[str, Mapping[str, Any]]],
        redacted: Iterable[str],
    ) -> CelProgram | None:
        """Compile a condition once, and check it against every action it applies to."""
        node = cond.node
        first = cond.source not in self.compiled
        if first:
            program, error = compile_condition(cond.source)
            self.compiled[cond.source] = program
            if error is not None:
                line = node.line + error.line - 1
                col = node.col + error.col - 1 if error.line == 1 else error.col
                self.problems.append(
                    Problem(node.file, line, col, "cel_syntax", f"{what}: {error.message}")
                )
        program = self.compiled[cond.source]
        if program is None:
            return None
        if first:
            for name in unknown_variables(program, cond.source):
                self.add(
                    node,
                    "unknown_variable",
                    f"{what} reads `{name}`, which is not a variable; "
                    "conditions may read agent, action, args, context, now",
                )
        # Field checks depend on the action's contract and data rules, so they run for every
        # action the condition applies to; duplicates are merged when problems are reported.
        for message in impossible_fields(cond.source, contracts):
            self.add(node, "unknown_field", f"{what}: {message}")
        for path in redacted:
            if re.search(re.escape(path) + r"(?![\w])", cond.source):
                self.add(
                    node,
                    "reads_redacted_field",
                    f"{what} reads `{path}`, which a data rule keeps out of the ledger, so the "
                    "decision could not be replayed; decide on a value the ledger keeps",
                )
        return program

    # -- plans -------------------------------------------------------------------------

    def plans(self) -> tuple[dict[tuple[str, str], Plan], dict[tuple[str, str], Plan]]:
        spec = self.spec
        default_route = (
            self.route(spec.default_route, spec.default_route_node, "`defaults.route`")
            if spec.default_route_node
            else None
        )
        plans: dict[tuple[str, str], Plan] = {}
        agent_plans: dict[tuple[str, str], Plan] = {}
        for role in spec.roles.values():
            for action in role.envelope:
                plans[(role.name, action)] = self.plan(role, action, None, default_route)
                for agent_id, agent in spec.agents.items():
                    if agent.profile.role == role.name and self.agent_specific(
                        role.name, action, agent_id
                    ):
                        agent_plans[(agent_id, action)] = self.plan(
                            role, action, agent_id, default_route
                        )
        return plans, agent_plans

    def agent_specific(self, role: str, action: str, agent: str) -> bool:
        items: list[Selector] = [r.selector for r in self.spec.rules]
        items += [f.selector for f in self.spec.factors] + [b.selector for b in self.spec.budgets]
        items += [b.selector for b in self.spec.breakers]
        return any(s.agents and agent in s.agents and _matches(s, role, action) for s in items)

    def plan(
        self, role: RoleSpec, action: str, agent: str | None, default_route: RouteRef | None
    ) -> Plan:
        spec = self.spec
        aspec = role.envelope[action]
        # Keys in canonical order: a contract's error messages then read the same whether
        # the bundle came from its files or from the ledger.
        schema = json.loads(canonical_bytes(dict(aspec.args)))
        contract = [(action, schema)]
        redacted = [
            ".".join(d.field.split("."))
            for d in spec.data
            if not d.actions or any(fnmatch.fnmatchcase(action, p) for p in d.actions)
        ]
        conditions: list[tuple[str, str]] = []
        programs: list[CelProgram | None] = []
        checks: list[Check] = []

        def applies(selector: Selector) -> bool:
            if selector.agents and (agent is None or agent not in selector.agents):
                return False
            return _matches(selector, role.name, action)

        def slots(conds: Sequence[Cond], what: str) -> tuple[int, ...]:
            out = []
            for cond in conds:
                out.append(len(conditions))
                conditions.append((what, cond.source))
                programs.append(self.program(cond, what, contract, redacted))
            return tuple(out)

        action_route = self.route(
            aspec.route,
            aspec.node.child("route") if aspec.route else aspec.node,
            f"action `{action}` of role `{role.name}`",
        )
        route = action_route or default_route
        if aspec.when:
            checks.append(
                Check(
                    "envelope",
                    f"{role.name}/{action}",
                    aspec.description or f"the envelope of role `{role.name}` for `{action}`",
                    slots(
                        aspec.when, f"the envelope condition of `{action}` in role `{role.name}`"
                    ),
                )
            )
        for rule in spec.rules:
            if applies(rule.selector):
                rroute = self.route(
                    rule.route,
                    rule.node.child("route") if rule.route else rule.node,
                    f"rule `{rule.id}`",
                )
                checks.append(
                    Check(
                        rule.effect,
                        rule.id,
                        rule.reason,
                        slots(rule.when, f"rule `{rule.id}`"),
                        route=rroute or route,
                        runbook=rule.runbook,
                    )
                )
        for factor in spec.factors:
            if applies(factor.selector):
                checks.append(
                    Check(
                        "factor",
                        factor.id,
                        factor.reason,
                        slots(factor.when, f"risk factor `{factor.id}`"),
                        points=factor.points,
                    )
                )
        budgets = tuple(
            BudgetRef(b.id, b.window_seconds, b.max_count, b.max_risk, b.reason)
            for b in spec.budgets
            if applies(b.selector)
        )
        if route is None:
            self.add(
                aspec.node,
                "no_route",
                f"action `{action}` of role `{role.name}` has no escalation route: "
                "set `route` on it or `defaults.route`",
            )
        program, variables, flat, present, whole = _combined_program(conditions, programs)
        schema_problem = self.contract_problem(schema)
        if schema_problem is not None:
            self.add(
                aspec.node.child("args") if "args" in aspec.node.value else aspec.node,
                "invalid_contract",
                f"the `args` contract of `{action}` in role `{role.name}` "
                f"is not a valid JSON Schema: {schema_problem}",
            )
            validate: Callable[[Any], Any] = _reject_all
        else:
            validate = fastjsonschema.compile(schema)
        return Plan(
            role=role.name,
            action=action,
            validate=validate,
            schema=schema,
            checks=tuple(checks),
            conditions=tuple(conditions),
            program=program,
            variables=frozenset(variables),
            flat=tuple(flat),
            present=tuple(present),
            whole=tuple(whole),
            budgets=budgets,
            route=route,
            singles=programs,
            breakers=tuple(b for b in spec.breakers if applies(b.selector)),
            timeout=aspec.timeout,
        )

    @staticmethod
    def contract_problem(schema: Mapping[str, Any]) -> str | None:
        try:
            jsonschema.Draft7Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            return f"{exc.message}" + (f" (at `{where}`)" if where else "")
        try:
            fastjsonschema.compile(dict(schema))
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            return str(exc)
        return None


def _combined_program(
    conditions: Sequence[tuple[str, str]], programs: Sequence[CelProgram | None]
) -> tuple[
    CelProgram | None,
    set[str],
    list[tuple[str, str, str]],
    list[tuple[str, str, str]],
    list[str],
]:
    """One CEL program returning every condition's result, with the inputs it binds."""
    program = None
    variables: set[str] = set()
    flat: list[tuple[str, str, str]] = []
    present: list[tuple[str, str, str]] = []
    whole: list[str] = []
    if conditions and all(p is not None for p in programs):
        for (_, src), single in zip(conditions, programs, strict=True):
            variables |= used_variables(single, src)
        flattened = [
            v
            for v in ("agent", "args", "context")
            if v in variables and all(read_fields(src, v) is not None for _, src in conditions)
        ]
        source = "[" + ", ".join(f"({flatten(src, flattened)})" for _, src in conditions) + "]"
        program, error = compile_condition(source)
        if error is not None:  # flattening is an optimisation; never let it cost a plan
            flattened = []
            source = "[" + ", ".join(f"({src})" for _, src in conditions) + "]"
            program, error = compile_condition(source)
        if error is not None:  # every part compiled alone; evaluate them one by one
            program = None
        names = set(program.variables()) if program is not None else set()
        for var in flattened:
            for field in sorted(
                set().union(*(read_fields(src, var) or () for _, src in conditions))
            ):
                if flat_name(var, field) in names:
                    flat.append((var, field, flat_name(var, field)))
                if flat_name(var, field, has=True) in names:
                    present.append((var, field, flat_name(var, field, has=True)))
        whole = sorted(v for v in variables if v not in flattened)
    return program, variables, flat, present, whole


def _reject_all(value: Any) -> Any:
    raise fastjsonschema.JsonSchemaValueException("the contract is invalid")


def _build(files: list[SourceFile], runbooks: dict[str, str], problems: list[Problem]) -> Bundle:
    spec = parse_bundle(files, problems)
    if not files:  # nothing was read: the reasons are already in `problems`
        raise PolicyInvalid(problems)
    compiler = _Compiler(spec, runbooks, problems)
    compiler.check_references()
    plans, agent_plans = compiler.plans()
    if problems:
        raise PolicyInvalid(
            sorted(set(problems), key=lambda p: (p.file, p.line, p.col, p.code, p.message))
        )
    assert spec.autonomy is not None
    content: dict[str, Any] = {
        "format": CONTENT_FORMAT,
        "files": {f.name: f.node.value for f in files},
        "runbooks": dict(runbooks),
    }
    routes = {rid: r.ref for rid, r in spec.routes.items()}
    agents = {aid: a.profile for aid, a in spec.agents.items()}
    data_rules = tuple(DataRule(tuple(d.field.split(".")), d.actions, d.store) for d in spec.data)
    ids = [r.id for r in spec.rules] + [f.id for f in spec.factors] + [b.id for b in spec.budgets]
    return Bundle(
        version=content_hash(content),
        content=content,
        agents=agents,
        roles={r.name: tuple(r.envelope) for r in spec.roles.values()},
        levels=dict(sorted(spec.autonomy.levels.items())),
        ceiling=spec.autonomy.ceiling,
        routes=routes,
        data_rules=data_rules,
        runbooks=dict(runbooks),
        plans=plans,
        agent_plans=agent_plans,
        rule_ids=tuple(ids),
        spec=spec,
    )


def load_bundle(path: str | Path) -> Bundle:
    """Read, check and compile the bundle in folder `path`.

    Raises:
        PolicyInvalid: with every problem found, each located by file, line and column.
    """
    problems: list[Problem] = []
    files, runbooks = read_bundle_files(Path(path), problems)
    return _build(files, runbooks, problems)


def bundle_from_content(content: Mapping[str, Any]) -> Bundle:
    """Rebuild a bundle from the canonical content the ledger stored for it.

    The result has the same version as the bundle that was recorded, or the content was
    not what was recorded; callers compare the two (replay does).
    """
    problems: list[Problem] = []
    files_raw = content.get("files")
    if content.get("format") != CONTENT_FORMAT or not isinstance(files_raw, dict):
        raise PolicyInvalid(
            [
                Problem(
                    "(ledger)",
                    0,
                    0,
                    "bundle_format",
                    "stored bundle content is not in a format this version of Charter reads",
                )
            ]
        )
    files = [SourceFile(name, Node(value, name, 0, 0)) for name, value in sorted(files_raw.items())]
    runbooks = {str(k): str(v) for k, v in (content.get("runbooks") or {}).items()}
    return _build(files, runbooks, problems)
