"""The bundle's file format, checked key by key into typed, located specs.

Each section of a policy file maps to one spec type below. Anything unknown is a problem
with a location, never silently ignored: a misspelled `when` that Charter skipped would
quietly widen what an agent may do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from charter.errors import Problem
from charter.model import ACTION_NAME, AgentProfile, RouteRef
from charter.policy._reader import Cond, Reader, Selector, action_pattern, parse_duration, selector
from charter.policy._source import Node, SourceFile
from charter.policy._spec_breakers import BreakerSpec, parse_breakers
from charter.policy._spec_permissions import PermissionsSpec, parse_permissions
from charter.policy._spec_watch import (
    WatchSpec,
    parse_alerts,
    parse_autonomy_rules,
    parse_monitors,
)

__all__ = [
    "ActionSpec",
    "AgentSpec",
    "AutonomySpec",
    "BreakerSpec",
    "BudgetSpec",
    "BundleSpec",
    "Cond",
    "DataRuleSpec",
    "FactorSpec",
    "RoleSpec",
    "RouteSpec",
    "RuleSpec",
    "Selector",
    "WebhookSpec",
    "parse_bundle",
    "parse_duration",
]

SECTIONS = (
    "agents",
    "alerts",
    "autonomy",
    "autonomy_rules",
    "breakers",
    "budgets",
    "data",
    "defaults",
    "monitors",
    "permissions",
    "risk",
    "roles",
    "routes",
    "rules",
)
EFFECTS = ("deny", "require_approval", "escalate")
STORE_MODES = ("drop", "hash", "mask")
WEBHOOK_FORMATS = ("json", "slack")
#: A portable environment variable name (POSIX: letters, digits, `_`, not starting with a digit).
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One action inside a role's envelope: its argument contract, conditions and route."""

    name: str
    args: Mapping[str, Any]
    when: tuple[Cond, ...]
    route: str | None
    description: str
    node: Node
    #: Seconds the action may run before its outcome is overdue (counted as a failure).
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class RoleSpec:
    """A role and its envelope: the only actions agents with this role may take."""

    name: str
    description: str
    envelope: Mapping[str, ActionSpec]
    node: Node


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """An agent identity as the bundle defines it: the profile decisions see, and where."""

    profile: AgentProfile
    node: Node


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """An explicit `deny`, `require_approval` or `escalate` rule."""

    id: str
    effect: str
    selector: Selector
    when: tuple[Cond, ...]
    reason: str
    route: str | None
    runbook: str | None
    node: Node


@dataclass(frozen=True, slots=True)
class FactorSpec:
    """A named risk factor: when its condition holds it adds `points` to the score."""

    id: str
    points: int
    selector: Selector
    when: tuple[Cond, ...]
    reason: str
    node: Node


@dataclass(frozen=True, slots=True)
class AutonomySpec:
    """The risk each autonomy level may take alone, and the ceiling above which none may."""

    levels: Mapping[int, int]
    descriptions: Mapping[int, str]
    ceiling: int
    node: Node


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """An outgoing webhook a route notifies when an approval opens or moves on.

    The bundle names only the environment variable holding the signing key, never the key:
    bundle content is stored in the ledger, and a key there would be readable by every auditor.
    """

    url: str
    format: str  # one of WEBHOOK_FORMATS
    secret_env: str
    node: Node


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """Where approvals go: the route decisions carry (`ref`), its next tier, its webhooks.

    `ref` holds the reviewer groups, how many must approve, the SLA and the timeout; the
    rest stays with the bundle (see `Bundle.webhooks`).
    """

    ref: RouteRef
    next_route: str | None
    description: str
    node: Node
    notify: tuple[WebhookSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """A cap on how many actions, or how much risk, an agent may take alone per window."""

    id: str
    selector: Selector
    window_seconds: int
    max_count: int | None
    max_risk: int | None
    reason: str
    node: Node


@dataclass(frozen=True, slots=True)
class DataRuleSpec:
    """A personal-data field and how the ledger stores it (drop, hash or mask)."""

    field: str
    actions: tuple[str, ...]
    store: str
    node: Node


@dataclass(slots=True)
class BundleSpec:
    """Every section of a bundle, merged across its files."""

    roles: dict[str, RoleSpec]
    agents: dict[str, AgentSpec]
    rules: list[RuleSpec]
    factors: list[FactorSpec]
    autonomy: AutonomySpec | None
    routes: dict[str, RouteSpec]
    budgets: list[BudgetSpec]
    data: list[DataRuleSpec]
    default_route: str | None
    default_route_node: Node | None
    breakers: list[BreakerSpec] = field(default_factory=list)
    permissions: PermissionsSpec | None = None
    watch: WatchSpec = field(default_factory=WatchSpec)


def _parse_roles(r: Reader, section: Node, spec: BundleSpec) -> None:
    for name, what, node in r.named(section, "`roles`", "role", "role", spec.roles):
        r.keys(node, ("description", "envelope"), what)
        envelope: dict[str, ActionSpec] = {}
        env_node = node.child("envelope") if "envelope" in node.value else None
        if env_node is None or not env_node.value:
            r.add(node, "no_envelope", f"{what} has no `envelope`: list the actions it may take")
        elif r.mapping(env_node, f"the envelope of {what}"):
            for action, anode in env_node.items():
                awhere = f"action `{action}` of {what}"
                if not ACTION_NAME.match(action):
                    r.add(
                        anode,
                        "invalid_name",
                        f"`{action}` is not a dotted action name like `payments.refund`",
                    )
                    continue
                if anode.value is None:
                    anode = Node({}, anode.file, anode.line, anode.col)
                if not r.mapping(anode, awhere):
                    continue
                r.keys(anode, ("args", "description", "route", "timeout", "when"), awhere)
                args: Mapping[str, Any] = {"type": "object", "additionalProperties": False}
                if "args" in anode.value:
                    if isinstance(anode.value["args"], dict):
                        args = anode.value["args"]
                    else:
                        r.add(anode.child("args"), "type", "`args` must be a JSON Schema mapping")
                envelope[action] = ActionSpec(
                    name=action,
                    args=args,
                    when=r.conditions(anode, "when", awhere),
                    route=r.text(anode, "route", awhere) or None,
                    description=r.text(anode, "description", awhere),
                    node=anode,
                    timeout=r.duration(anode, "timeout", awhere),
                )
        spec.roles[name] = RoleSpec(name, r.text(node, "description", what), envelope, node)


def _parse_agents(r: Reader, section: Node, spec: BundleSpec) -> None:
    for agent_id, what, node in r.named(section, "`agents`", "agent", "agent id", spec.agents):
        r.keys(node, ("autonomy", "description", "model", "owner", "role"), what, ("role",))
        model_id = model_version = ""
        if "model" in node.value:
            model = node.child("model")
            if r.mapping(model, f"`model` of {what}"):
                r.keys(model, ("id", "version"), f"`model` of {what}", ("id",))
                model_id = r.text(model, "id", f"`model` of {what}")
                model_version = r.text(model, "version", f"`model` of {what}")
        autonomy = r.integer(node, "autonomy", what)
        profile = AgentProfile(
            id=agent_id,
            role=r.text(node, "role", what),
            owner=r.text(node, "owner", what),
            model_id=model_id,
            model_version=model_version,
            autonomy=0 if autonomy is None else autonomy,
        )
        spec.agents[agent_id] = AgentSpec(profile, node)


def _parse_rules(r: Reader, section: Node, spec: BundleSpec) -> None:
    allowed = ("actions", "agents", "effect", "id", "reason", "roles", "route", "runbook", "when")
    required = ("id", "effect", "reason")
    for rid, what, node in r.identified(section, "`rules`", "rule", "rule id", allowed, required):
        effect = node.value.get("effect")
        if "effect" in node.value and effect not in EFFECTS:
            r.add(
                node.child("effect"),
                "invalid_effect",
                f"`effect` of {what} must be one of {', '.join(EFFECTS)}, not `{effect}`",
            )
        runbook = r.text(node, "runbook", what) or None
        if runbook is not None and effect != "escalate":
            r.add(
                node.child("runbook"),
                "runbook_without_escalate",
                "only `escalate` rules carry a runbook",
            )
        spec.rules.append(
            RuleSpec(
                id=str(rid),
                effect=str(effect),
                selector=selector(r, node, what),
                when=r.conditions(node, "when", what),
                reason=r.text(node, "reason", what),
                route=r.text(node, "route", what) or None,
                runbook=runbook,
                node=node,
            )
        )


def _parse_risk(r: Reader, section: Node, spec: BundleSpec) -> None:
    if not r.mapping(section, "`risk`"):
        return
    r.keys(section, ("factors",), "`risk`")
    if "factors" not in section.value:
        return
    factors = section.child("factors")
    allowed = ("actions", "agents", "id", "points", "reason", "roles", "when")
    required = ("id", "points", "reason", "when")
    for fid, what, node in r.identified(
        factors, "`risk.factors`", "risk factor", "factor id", allowed, required
    ):
        spec.factors.append(
            FactorSpec(
                id=str(fid),
                points=r.integer(node, "points", what) or 0,
                selector=selector(r, node, what),
                when=r.conditions(node, "when", what),
                reason=r.text(node, "reason", what),
                node=node,
            )
        )


def _parse_autonomy(r: Reader, section: Node, spec: BundleSpec) -> None:
    if not r.once(section, "autonomy", spec.autonomy is not None):
        return
    r.keys(section, ("ceiling", "levels"), "`autonomy`", ("ceiling", "levels"))
    levels: dict[int, int] = {}
    descriptions: dict[int, str] = {}
    if "levels" in section.value:
        lnode = section.child("levels")
        if r.mapping(lnode, "`autonomy.levels`"):
            for key, node in lnode.items():
                what = f"autonomy level `{key}`"
                if not (key.isascii() and key.isdigit()):
                    r.add(node, "type", f"{what}: levels are whole numbers 0, 1, 2, ...")
                    continue
                if isinstance(node.value, int) and not isinstance(node.value, bool):
                    node = Node({"max_risk": node.value}, node.file, node.line, node.col)
                if not r.mapping(node, what):
                    continue
                r.keys(node, ("description", "max_risk"), what, ("max_risk",))
                levels[int(key)] = r.integer(node, "max_risk", what) or 0
                descriptions[int(key)] = r.text(node, "description", what)
    ceiling = r.integer(section, "ceiling", "`autonomy`") or 0
    ordered = [levels[k] for k in sorted(levels)]
    if ordered != sorted(ordered):
        r.add(section, "levels_order", "a higher autonomy level may not allow less risk")
    if levels and max(levels.values()) > ceiling:
        r.add(section, "ceiling", "no autonomy level may allow more risk than the `ceiling`")
    spec.autonomy = AutonomySpec(levels, descriptions, ceiling, section)


def _parse_routes(r: Reader, section: Node, spec: BundleSpec) -> None:
    allowed = ("approvals", "description", "groups", "notify", "on_timeout", "sla")
    for rid, what, node in r.named(section, "`routes`", "route", "route id", spec.routes):
        r.keys(node, allowed, what, ("groups", "sla"))
        groups = r.names(node, "groups", what)
        if "groups" in node.value and not groups:
            r.add(node.child("groups"), "type", f"{what} needs at least one reviewer group")
        approvals = r.integer(node, "approvals", what, minimum=1) or 1
        sla = parse_duration(node.value.get("sla"))
        if "sla" in node.value and sla is None:
            r.add(node.child("sla"), "duration", "`sla` must be a duration like `30m`, `4h`, `1d`")
        on_timeout, next_route = "deny", None
        if "on_timeout" in node.value:
            tnode = node.child("on_timeout")
            if tnode.value == "deny":
                pass
            elif isinstance(tnode.value, dict) and set(tnode.value) == {"route"}:
                next_route = str(tnode.value["route"])
                on_timeout = f"route:{next_route}"
            else:
                r.add(
                    tnode,
                    "invalid_timeout",
                    "`on_timeout` must be `deny` or `{route: NEXT_ROUTE}`",
                )
        spec.routes[rid] = RouteSpec(
            ref=RouteRef(rid, groups, approvals, sla or 0, on_timeout),
            next_route=next_route,
            description=r.text(node, "description", what),
            node=node,
            notify=_parse_webhooks(r, node, what),
        )


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook address, or None when it can."""
    try:
        parts = urlsplit(url)
        port = parts.port  # reading it validates it: `:http` or `:99999` raise here
    except ValueError as exc:
        return f"it does not parse ({exc})"
    if parts.scheme not in ("http", "https"):
        return "it must start with `http://` or `https://`"
    if not parts.hostname:
        return "it names no host"
    if parts.username is not None or parts.password is not None:
        # Bundle content is stored in the ledger; credentials in it would leak to every reader.
        return "it carries credentials; sign with `secret_env` instead"
    if port == 0:
        return "port 0 is not a port a server listens on"
    if any(c.isspace() for c in url):
        return "it contains whitespace"
    return None


def _parse_webhooks(r: Reader, route: Node, what: str) -> tuple[WebhookSpec, ...]:
    """`notify:` of a route: a list of webhooks, each a url, a format and a key's env var."""
    if "notify" not in route.value:
        return ()
    section = route.child("notify")
    if not isinstance(section.value, list):
        r.add(section, "type", f"`notify` of {what} must be a list of webhooks")
        return ()
    hooks: list[WebhookSpec] = []
    seen: set[tuple[str, str]] = set()
    for index, node in section.items():
        hwhat = f"webhook {index + 1} of {what}"
        if not r.mapping(node, hwhat):
            continue
        ok = r.keys(node, ("format", "secret_env", "url"), hwhat, ("url", "secret_env"))
        url = node.value.get("url")
        if "url" in node.value:
            problem = _url_problem(url) if isinstance(url, str) else "it is not text"
            if problem is not None:
                r.add(
                    node.child("url"), "invalid_url", f"`url` of {hwhat} is not usable: {problem}"
                )
                ok = False
        fmt = node.value.get("format", "json")
        if fmt not in WEBHOOK_FORMATS:
            r.add(
                node.child("format"),
                "invalid_format",
                f"`format` of {hwhat} must be one of {', '.join(WEBHOOK_FORMATS)}, not `{fmt}`",
            )
            ok = False
        env = node.value.get("secret_env")
        if "secret_env" in node.value and not (isinstance(env, str) and _ENV_NAME.match(env)):
            r.add(
                node.child("secret_env"),
                "invalid_env",
                f"`secret_env` of {hwhat} must name an environment variable, like "
                f"`CHARTER_HOOK_SECRET` (letters, digits and `_`), not `{env}`",
            )
            ok = False
        if not ok:
            continue
        if (url, fmt) in seen:
            r.add(node, "duplicate", f"{what} lists webhook `{url}` ({fmt}) twice")
            continue
        seen.add((url, fmt))
        hooks.append(WebhookSpec(url=url, format=fmt, secret_env=env, node=node))
    return tuple(hooks)


def _parse_budgets(r: Reader, section: Node, spec: BundleSpec) -> None:
    allowed = ("actions", "agents", "id", "max_count", "max_risk", "reason", "roles", "window")
    required = ("id", "window")
    for bid, what, node in r.identified(
        section, "`budgets`", "budget", "budget id", allowed, required
    ):
        window = parse_duration(node.value.get("window"))
        if "window" in node.value and window is None:
            r.add(node.child("window"), "duration", "`window` must be a duration like `1h`")
        max_count = r.integer(node, "max_count", what, minimum=1)
        max_risk = r.integer(node, "max_risk", what, minimum=1)
        if max_count is None and max_risk is None:
            r.add(node, "missing_key", f"{what} needs `max_count`, `max_risk` or both")
        spec.budgets.append(
            BudgetSpec(
                id=str(bid),
                selector=selector(r, node, what),
                window_seconds=window or 0,
                max_count=max_count,
                max_risk=max_risk,
                reason=r.text(node, "reason", what, default=f"budget `{bid}`"),
                node=node,
            )
        )


_FIELD = re.compile(r"^(args|context)(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _parse_data(r: Reader, section: Node, spec: BundleSpec) -> None:
    for node in r.listed(section, "`data`", "data rule"):
        what = f"data rule for `{node.value.get('field', '?')}`"
        r.keys(node, ("actions", "field", "store"), what, ("field", "store"))
        path = node.value.get("field")
        if "field" in node.value and not (isinstance(path, str) and _FIELD.match(path)):
            r.add(
                node.child("field"),
                "invalid_field",
                "`field` must be a dotted path under `args` or `context`, e.g. `args.email`",
            )
            continue
        store = node.value.get("store")
        if "store" in node.value and store not in STORE_MODES:
            r.add(
                node.child("store"),
                "invalid_store",
                f"`store` must be one of {', '.join(STORE_MODES)}, not `{store}`",
            )
        spec.data.append(
            DataRuleSpec(
                field=str(path),
                actions=r.names(node, "actions", what, action_pattern),
                store=str(store),
                node=node,
            )
        )


def _parse_defaults(r: Reader, section: Node, spec: BundleSpec) -> None:
    if not r.once(section, "defaults", spec.default_route_node is not None):
        return
    r.keys(section, ("route",), "`defaults`")
    spec.default_route = r.text(section, "route", "`defaults`") or None
    spec.default_route_node = section.child("route") if "route" in section.value else section


def _parse_permissions(r: Reader, section: Node, spec: BundleSpec) -> None:
    spec.permissions = parse_permissions(r, section, spec.permissions)


_PARSERS: dict[str, Callable[[Reader, Node, BundleSpec], None]] = {
    "agents": _parse_agents,
    "breakers": lambda r, section, spec: parse_breakers(r, section, spec.breakers),
    "permissions": _parse_permissions,
    "monitors": lambda r, section, spec: parse_monitors(r, section, spec.watch),
    "alerts": lambda r, section, spec: parse_alerts(r, section, spec.watch, _parse_webhooks),
    "autonomy_rules": lambda r, section, spec: parse_autonomy_rules(r, section, spec.watch),
    "autonomy": _parse_autonomy,
    "budgets": _parse_budgets,
    "data": _parse_data,
    "defaults": _parse_defaults,
    "risk": _parse_risk,
    "roles": _parse_roles,
    "routes": _parse_routes,
    "rules": _parse_rules,
}


def parse_bundle(files: Iterable[SourceFile], problems: list[Problem]) -> BundleSpec:
    """Check every file's structure and merge the sections into one `BundleSpec`."""
    spec = BundleSpec({}, {}, [], [], None, {}, [], [], None, None)
    reader = Reader(problems)
    for source in files:
        root = source.node
        if not reader.mapping(root, f"`{source.name}`"):
            continue
        reader.keys(root, SECTIONS, "a policy file")
        for section in SECTIONS:
            if section in root.value:
                _PARSERS[section](reader, root.child(section), spec)
    return spec
