"""Replay: re-deciding recorded requests, to verify the record or to preview a change.

Each decision entry holds everything its decision depended on: the request (after data
rules), the agent's state, the clock (`at`) and the bundle version. Replaying it under its
recorded version must give the recorded decision exactly, or the record (or the engine)
is not what it claims. Replaying under another bundle shows what that bundle would have
changed, by verdict, by rule and by agent, before it ships.

This module is pure: the caller streams entries in and says how to find a bundle version.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from charter.errors import CharterError
from charter.ledger import events
from charter.model import ActionRequest, AgentState
from charter.policy import Bundle, decide

__all__ = ["DECISION_KIND", "RecordedEntry", "ReplayReport", "StateCheck", "replay"]

#: The ledger entry kind that carries a decision.
DECISION_KIND = events.DECISION
_KEEP = 20


@dataclass(frozen=True, slots=True)
class RecordedEntry:
    """A ledger entry as replay needs it: its position, kind, clock and decoded payload."""

    seq: int
    kind: str
    at: str
    payload: Mapping[str, Any]


@dataclass(slots=True)
class StateCheck:
    """How the state each decision recorded compares with what the ledger before it gives.

    A decision records the halts, autonomy override, registry entry and budget use it
    saw. Folding every earlier entry (`charter.controls.ServiceState`, the fold a service
    opens with) gives what the ledger says was in force at that point. The two differ
    legitimately only for a decision taken while a halt or change was still on its way
    (queued but not yet durable, or not yet seen by another process sharing the store);
    any other difference is a defect to look into. It does not fail replay, which still
    reproduces each decision from what it recorded.
    """

    checked: int = 0
    differing: int = 0
    #: (seq, the state's fields that differ) of the first few differing decisions.
    examples: list[tuple[int, list[str]]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The check as plain JSON."""
        return {
            "checked": self.checked,
            "differing": self.differing,
            "examples": [{"seq": seq, "fields": fields} for seq, fields in self.examples],
        }


@dataclass(slots=True)
class ReplayReport:
    """What replay found.

    In verify mode (`against` is None) any changed decision is a mismatch and `ok` is
    False; in what-if mode changes are the point, and `ok` only says nothing failed.
    """

    against: str | None
    total: int = 0
    unchanged: int = 0
    changed: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_rule: dict[str, Counter[str]] = field(default_factory=dict)
    by_agent: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)
    examples: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    error_count: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    #: Verify mode over a whole ledger: each decision's recorded state against the
    #: ledger's history; None when not checked (what-if mode, or entries given directly).
    state: StateCheck | None = None

    @property
    def ok(self) -> bool:
        """Verify mode: every decision reproduced; what-if mode: every entry replayed."""
        if self.error_count:
            return False
        return self.against is not None or self.changed == 0

    def merge(self, later: ReplayReport, *, examples: int = 3) -> None:
        """Add the report of a later stretch of the same ledger to this one.

        Replay of one entry depends on nothing but that entry, so a ledger can be replayed
        in pieces (in parallel) and the pieces merged in ledger order.
        """
        self.total += later.total
        self.unchanged += later.unchanged
        self.changed += later.changed
        self.transitions.update(later.transitions)
        self.versions.update(later.versions)
        for rule, counts in later.by_rule.items():
            self.by_rule.setdefault(rule, Counter()).update(counts)
        for agent, moves in later.by_agent.items():
            self.by_agent.setdefault(agent, Counter()).update(moves)
        for move, items in later.examples.items():
            kept = self.examples.setdefault(move, [])
            kept.extend(items[: max(0, examples - len(kept))])
        self.mismatches.extend(later.mismatches[: max(0, _KEEP - len(self.mismatches))])
        self.errors.extend(later.errors[: max(0, _KEEP - len(self.errors))])
        self.error_count += later.error_count

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON (what `charter replay --json` prints)."""
        return {
            "mode": "verify" if self.against is None else "what-if",
            "against": self.against,
            "ok": self.ok,
            "total": self.total,
            "unchanged": self.unchanged,
            "changed": self.changed,
            "versions": dict(self.versions),
            "transitions": [
                {"from": a, "to": b, "count": n} for (a, b), n in self.transitions.most_common()
            ],
            "by_rule": {rule: dict(counts) for rule, counts in sorted(self.by_rule.items())},
            "by_agent": {
                agent: [{"from": a, "to": b, "count": n} for (a, b), n in c.most_common()]
                for agent, c in sorted(self.by_agent.items())
            },
            "examples": [
                {"from": a, "to": b, "entries": items} for (a, b), items in self.examples.items()
            ],
            "mismatches": self.mismatches,
            "errors": [{"seq": seq, "message": m} for seq, m in self.errors],
            "error_count": self.error_count,
            "state": self.state.to_json() if self.state is not None else None,
        }


def _fired(decision: Mapping[str, Any]) -> set[str]:
    rules = {r["rule"] for r in decision.get("reasons", ()) if r.get("rule")}
    return rules | {f["id"] for f in decision.get("factors", ())}


def _differences(recorded: Mapping[str, Any], replayed: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(recorded) | set(replayed))
    return [
        f"{k}: recorded {recorded.get(k)!r}, replayed {replayed.get(k)!r}"
        for k in keys
        if recorded.get(k) != replayed.get(k)
    ]


def _request(payload: Mapping[str, Any]) -> ActionRequest:
    raw = payload["request"]
    return ActionRequest(
        agent=raw["agent"],
        action=raw["action"],
        args=raw.get("args", {}),
        context=raw.get("context", {}),
        idempotency_key=raw.get("idempotency_key"),
        trace_id=raw.get("trace_id"),
    )


def replay(
    entries: Iterable[RecordedEntry],
    resolve: Callable[[str], Bundle | None],
    against: Bundle | None = None,
    *,
    examples: int = 3,
) -> ReplayReport:
    """Re-decide every decision entry in `entries`.

    Args:
        entries: ledger entries in order; entries of other kinds are skipped.
        resolve: finds the bundle of a recorded version (None when it is not stored).
        against: decide under this bundle instead of each entry's recorded one.
        examples: how many example entries to keep per verdict transition.

    Returns:
        A report; `ok` says whether the record was reproduced (verify mode).
    """
    report = ReplayReport(against=against.version if against is not None else None)
    cache: dict[str, Bundle | CharterError | None] = {}

    def bundle_of(version: str) -> Bundle:
        if against is not None:
            return against
        if version not in cache:
            try:
                cache[version] = resolve(version)
            except CharterError as exc:  # remembered: every entry of it fails alike
                cache[version] = exc
        found = cache[version]
        if isinstance(found, CharterError):
            raise found
        if found is None:
            raise CharterError(f"bundle `{version}` is not stored in the ledger")
        return found

    for entry in entries:
        if entry.kind != DECISION_KIND:
            continue
        report.total += 1
        payload = entry.payload
        try:
            recorded = payload["decision"]
            version = recorded["policy_version"]
            report.versions[version] += 1
            request = _request(payload)
            state = AgentState.from_json(payload.get("state") or {})
            now = dt.datetime.fromisoformat(entry.at)
            redacted = [r["field"] for r in payload.get("redacted") or ()]
            decision = decide(request, bundle_of(version), state, now, redacted=redacted)
            replayed = decision.to_json()
        except (CharterError, KeyError, TypeError, ValueError) as exc:
            report.error_count += 1
            if len(report.errors) < _KEEP:
                report.errors.append((entry.seq, f"cannot replay: {exc}"))
            continue
        if against is not None:
            # The version differs by construction; compare what the decision says.
            replayed["policy_version"] = version
        if replayed == recorded:
            report.unchanged += 1
        else:
            _record_change(report, entry, payload, request, recorded, replayed, examples)
    return report


def _record_change(
    report: ReplayReport,
    entry: RecordedEntry,
    payload: Mapping[str, Any],
    request: ActionRequest,
    recorded: Mapping[str, Any],
    replayed: Mapping[str, Any],
    examples: int,
) -> None:
    """Count one changed decision by verdict, rule and agent, keeping a few examples."""
    report.changed += 1
    move = (recorded["verdict"], replayed["verdict"])
    report.transitions[move] += 1
    report.by_agent.setdefault(request.agent, Counter())[move] += 1
    before, after = _fired(recorded), _fired(replayed)
    for rule in after - before:
        report.by_rule.setdefault(rule, Counter())["newly_fired"] += 1
    for rule in before - after:
        report.by_rule.setdefault(rule, Counter())["no_longer_fired"] += 1
    kept = report.examples.setdefault(move, [])
    if len(kept) < examples:
        kept.append(
            {
                "seq": entry.seq,
                "decision_id": payload.get("decision_id"),
                "agent": request.agent,
                "action": request.action,
                "risk": [recorded["risk"], replayed["risk"]],
                "rules_added": sorted(after - before),
                "rules_removed": sorted(before - after),
            }
        )
    if report.against is None and len(report.mismatches) < _KEEP:
        report.mismatches.append(
            {"seq": entry.seq, "differences": _differences(recorded, replayed)}
        )
