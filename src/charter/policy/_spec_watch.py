"""The sections that watch agents after they act: `monitors`, `alerts`, `autonomy_rules`.

- `monitors` says what the rolling figures check: their window and buckets, the drift
  baseline, the fields watched for drift, data sources' freshness limits, required
  fields and declared ranges (`charter.monitors.MonitorConfig`).
- `alerts` are conditions over those figures, each with a window, a minimum sample, a
  severity, a runbook (a Markdown file under `runbooks/`) and webhooks to tell.
- `autonomy_rules` say when the controller demotes an agent, how far, and how many clean
  decisions earn a proposal to give the level back (`charter.monitors.AutonomyRule`).

Every value is checked where it is written; a figure a rule cannot read, a runbook that
is not in the bundle, or a window that is no duration is a located problem.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from charter.monitors import (
    RULE_FIGURES,
    SEVERITIES,
    AlertRule,
    AutonomyRule,
    MonitorConfig,
    Threshold,
)
from charter.policy._reader import Reader, action_pattern
from charter.policy._source import Node

__all__ = ["ALERT_LEVELS", "WatchSpec", "parse_alerts", "parse_autonomy_rules", "parse_monitors"]

#: The groups an alert rule may judge: each agent, each action of an agent, each model, or
#: the whole fleet.
ALERT_LEVELS = ("agent", "action", "model", "fleet")

#: Reads a `notify:` list of webhooks (the routes' parser, shared).
Webhooks = Callable[[Reader, Node, str], tuple[Any, ...]]


@dataclass(slots=True)
class WatchSpec:
    """The watching sections of a bundle, merged across its files."""

    monitors: MonitorConfig | None = None
    monitors_node: Node | None = None
    alerts: list[AlertRule] = field(default_factory=list)
    alert_nodes: dict[str, Node] = field(default_factory=dict)
    alert_hooks: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    autonomy_rules: list[AutonomyRule] = field(default_factory=list)
    rule_nodes: dict[str, Node] = field(default_factory=dict)


def parse_monitors(r: Reader, section: Node, spec: WatchSpec) -> None:
    """Check a `monitors` mapping into a `MonitorConfig`."""
    if not r.once(section, "monitors", spec.monitors_node is not None):
        return
    spec.monitors_node = section
    what = "`monitors`"
    keys = ("bucket", "drift", "freshness", "ranges", "required", "watch", "window")
    r.keys(section, keys, what)
    values: dict[str, Any] = {}
    for key, name in (("bucket", "bucket_seconds"), ("window", "window_seconds")):
        seconds = r.duration(section, key, what)
        if seconds is not None:
            values[name] = seconds
    if "drift" in section.value:
        drift = section.child("drift")
        if r.mapping(drift, "`monitors.drift`"):
            r.keys(drift, ("baseline", "recent"), "`monitors.drift`")
            for key in ("baseline", "recent"):
                seconds = r.duration(drift, key, "`monitors.drift`")
                if seconds is not None:
                    values[f"{key}_seconds"] = seconds
    if "freshness" in section.value:
        node = section.child("freshness")
        if r.mapping(node, "`monitors.freshness`"):
            limits: dict[str, float] = {}
            for source, _ in node.items():
                seconds = r.duration(node, source, f"the freshness of `{source}`")
                if seconds is not None:
                    limits[source] = float(seconds)
            values["freshness"] = limits
    for key in ("watch", "required"):
        if key in section.value:
            values[key] = dict(_fields_by_action(r, section.child(key), f"`monitors.{key}`"))
    if "ranges" in section.value:
        values["ranges"] = _ranges(r, section.child("ranges"))
    try:
        spec.monitors = MonitorConfig(**values)
    except ValueError as exc:
        r.add(section, "invalid_monitors", f"{what}: {exc}")


def _fields_by_action(r: Reader, node: Node, what: str) -> Iterator[tuple[str, list[str]]]:
    if not r.mapping(node, what):
        return
    for pattern, child in node.items():
        if not action_pattern(pattern) and pattern != "*":
            r.add(child, "invalid_name", f"`{pattern}` in {what} is not an action name or pattern")
            continue
        paths = r.names(node, pattern, f"{what} of `{pattern}`", _field_path)
        yield pattern, list(paths)


def _field_path(path: str) -> bool:
    head, _, rest = path.partition(".")
    return head in ("args", "context") and bool(rest) and all(p for p in rest.split("."))


def _ranges(r: Reader, node: Node) -> dict[str, dict[str, list[float | None]]]:
    out: dict[str, dict[str, list[float | None]]] = {}
    what = "`monitors.ranges`"
    if not r.mapping(node, what):
        return out
    for pattern, child in node.items():
        where = f"{what} of `{pattern}`"
        if not r.mapping(child, where):
            continue
        ranges: dict[str, list[float | None]] = {}
        for path, bounds in child.items():
            pair = bounds.value
            ok = (
                _field_path(path)
                and isinstance(pair, list)
                and len(pair) == 2
                and all(
                    v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                    for v in pair
                )
            )
            if not ok:
                r.add(
                    bounds,
                    "invalid_range",
                    f"{where}: `{path}` needs a field under `args` or `context` and "
                    "`[min, max]` (either may be null)",
                )
                continue
            ranges[path] = [None if v is None else float(v) for v in pair]
        out[pattern] = ranges
    return out


def _threshold(r: Reader, node: Node, what: str) -> Threshold | None:
    """`figure` with `above` or `below`, optional `clear` and `min_sample`."""
    figure = node.value.get("figure")
    if "figure" in node.value and figure not in RULE_FIGURES:
        close = difflib.get_close_matches(str(figure), sorted(RULE_FIGURES), n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        r.add(node.child("figure"), "unknown_figure", f"{what} reads `{figure}`, no figure{hint}")
        return None
    numbers: dict[str, float] = {}
    for key in ("above", "below", "clear"):
        if key in node.value:
            value = node.value[key]
            if isinstance(value, int | float) and not isinstance(value, bool):
                numbers[key] = float(value)
            else:
                r.add(node.child(key), "type", f"`{key}` of {what} must be a number")
    if ("above" in numbers) == ("below" in numbers):
        r.add(node, "threshold", f"{what} needs exactly one of `above` and `below`")
        return None
    if figure is None:
        return None
    minimum = r.integer(node, "min_sample", what, minimum=1) or 1
    return Threshold(
        str(figure),
        above=numbers.get("above"),
        below=numbers.get("below"),
        clear=numbers.get("clear"),
        min_sample=minimum,
    )


_ALERT_KEYS = (
    "above",
    "actions",
    "agents",
    "below",
    "clear",
    "figure",
    "id",
    "level",
    "min_sample",
    "notify",
    "runbook",
    "severity",
    "summary",
    "window",
)


def parse_alerts(r: Reader, section: Node, spec: WatchSpec, webhooks: Webhooks) -> None:
    """Check an `alerts` list and add its rules to `spec`."""
    required = ("id", "figure", "window")
    for aid, what, node in r.identified(
        section, "`alerts`", "alert", "alert id", _ALERT_KEYS, required
    ):
        if aid in spec.alert_nodes:
            r.add(node, "duplicate_id", f"{what} is defined twice")
            continue
        threshold = _threshold(r, node, what)
        window = r.duration(node, "window", what)
        level = node.value.get("level", "agent")
        if level not in ALERT_LEVELS:
            r.add(
                node.child("level"),
                "invalid_level",
                f"`level` of {what} must be one of {', '.join(ALERT_LEVELS)}",
            )
            level = "agent"
        severity = node.value.get("severity", "warning")
        if severity not in SEVERITIES:
            r.add(
                node.child("severity"),
                "invalid_severity",
                f"`severity` of {what} must be one of {', '.join(SEVERITIES)}",
            )
            severity = "warning"
        runbook = r.text(node, "runbook", what) or None
        hooks = webhooks(r, node, what)
        if threshold is None or window is None:
            continue
        spec.alert_nodes[str(aid)] = node
        spec.alert_hooks[str(aid)] = hooks
        spec.alerts.append(
            AlertRule(
                id=str(aid),
                threshold=threshold,
                window_seconds=window,
                severity=str(severity),
                level=str(level),
                agents=r.names(node, "agents", what),
                actions=r.names(node, "actions", what, action_pattern),
                runbook=runbook,
                summary=r.text(node, "summary", what),
            )
        )


_RULE_KEYS = (
    "agents",
    "demote",
    "floor",
    "id",
    "reason",
    "restore_after",
    "roles",
    "when",
    "window",
)


def parse_autonomy_rules(r: Reader, section: Node, spec: WatchSpec) -> None:
    """Check an `autonomy_rules` list and add its rules to `spec`."""
    required = ("id", "when", "window")
    for rid, what, node in r.identified(
        section, "`autonomy_rules`", "autonomy rule", "autonomy rule id", _RULE_KEYS, required
    ):
        if rid in spec.rule_nodes:
            r.add(node, "duplicate_id", f"{what} is defined twice")
            continue
        thresholds = list(_conditions(r, node, what))
        window = r.duration(node, "window", what)
        demote = r.integer(node, "demote", what, minimum=1)
        floor = r.integer(node, "floor", what)
        restore = r.integer(node, "restore_after", what, minimum=1)
        if not thresholds or window is None:
            continue
        spec.rule_nodes[str(rid)] = node
        spec.autonomy_rules.append(
            AutonomyRule(
                id=str(rid),
                thresholds=tuple(thresholds),
                window_seconds=window,
                demote=demote or 1,
                floor=floor,
                restore_after=restore or 100,
                agents=r.names(node, "agents", what),
                roles=r.names(node, "roles", what),
                reason=r.text(node, "reason", what),
            )
        )


def _conditions(r: Reader, node: Node, what: str) -> Iterator[Threshold]:
    """`when:` of an autonomy rule: one threshold, or a list of them (any one demotes)."""
    if "when" not in node.value:
        return
    child = node.child("when")
    items: list[Node] = [child] if isinstance(child.value, dict) else []
    if isinstance(child.value, list):
        items = [item for _, item in child.items()]
    if not items:
        r.add(child, "type", f"`when` of {what} must be a threshold or a list of them")
        return
    for item in items:
        if not r.mapping(item, f"a condition of {what}"):
            continue
        r.keys(
            item,
            ("above", "below", "clear", "figure", "min_sample"),
            f"a condition of {what}",
            ("figure",),
        )
        threshold = _threshold(r, item, f"a condition of {what}")
        if threshold is not None:
            yield threshold


def runbook_problems(spec: WatchSpec, runbooks: Mapping[str, str]) -> Iterator[tuple[Node, str]]:
    """Alerts naming a runbook the bundle does not have: (where, message)."""
    for alert in spec.alerts:
        if alert.runbook is not None and alert.runbook not in runbooks:
            node = spec.alert_nodes[alert.id]
            yield (
                node.child("runbook"),
                f"alert `{alert.id}` names runbook `{alert.runbook}`, "
                "which is not a file under `runbooks/` in the bundle",
            )
