"""Decision benchmarks: `decide` in-process, for the example bundle and a 200-rule bundle.

Run: python bench/bench_decide.py [--requests 20000] [--passes 3]. Prints one table.

Requests come from `charter.demo.Fleet` (the demo's realistic mix) and are converted with
`ActionRequest.from_json` before timing; each `decide` call is timed on its own with
`time.perf_counter_ns`, after a warm-up pass, with the garbage collector disabled (a second
row per bundle shows the same pass with it enabled). The large bundle is generated into a
temporary folder as YAML: 20 roles of 10 actions each, with JSON Schema contracts, and 200
rules and risk factors selected by role and by action pattern.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from charter.demo import Fleet
from charter.examples import EXAMPLE_POLICY
from charter.model import ActionRequest, AgentState
from charter.policy import Bundle, decide, load_bundle

START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)  # a Monday, as in the demo
STATE = AgentState()
TARGET_P50_US = 20.0
TARGET_P99_US = 60.0
TARGET_RATIO = 2.0


# -- timing ------------------------------------------------------------------------------


def clock_times(count: int, seed: int) -> list[dt.datetime]:
    """A simulated clock like the demo's: a request every ~6 s, spanning days at scale."""
    rng = random.Random(seed)
    moment, out = START, []
    for _ in range(count):
        moment += dt.timedelta(seconds=rng.expovariate(1 / 6))
        out.append(moment)
    return out


def time_calls(
    bundle: Bundle, requests: Sequence[ActionRequest], times: Sequence[dt.datetime], passes: int
) -> list[int]:
    """Nanoseconds per `decide` call, one sample per request per pass."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(passes):
        for request, now in zip(requests, times, strict=True):
            start = clock()
            decide(request, bundle, STATE, now)
            samples.append(clock() - start)
    return samples


def measure(
    bundle: Bundle,
    requests: Sequence[ActionRequest],
    times: Sequence[dt.datetime],
    passes: int,
    *,
    collect: bool,
) -> list[int]:
    time_calls(bundle, requests, times, 1)  # warm-up: caches, branch predictors, allocator
    gc.collect()
    if collect:
        return time_calls(bundle, requests, times, passes)
    gc.disable()
    try:
        return time_calls(bundle, requests, times, passes)
    finally:
        gc.enable()


def pct(sorted_ns: Sequence[int], q: float) -> float:
    """The q-quantile (nearest rank) in µs."""
    index = min(len(sorted_ns) - 1, max(0, round(q * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1000


def summary(samples: Sequence[int]) -> tuple[int, float, float, float]:
    ordered = sorted(samples)
    return len(ordered), pct(ordered, 0.50), pct(ordered, 0.99), statistics.fmean(ordered) / 1000


def kind_of(bundle: Bundle, request: ActionRequest, now: dt.datetime) -> str:
    """The row a request is reported under: its action, or why it stopped early."""
    decision = decide(request, bundle, STATE, now)
    codes = {r.code for r in decision.reasons}
    if "outside_envelope" in codes and decision.risk == 0 and not decision.factors:
        profile = bundle.agents.get(request.agent)
        if profile is not None and request.action not in bundle.roles.get(profile.role, ()):
            return "(outside envelope)"
    if "contract" in codes:
        return "(contract broken)"
    return request.action


# -- the example bundle's traffic ------------------------------------------------------------


def fleet_requests(count: int, seed: int) -> list[ActionRequest]:
    fleet = Fleet(seed)
    return [ActionRequest.from_json(fleet.next()) for _ in range(count)]


# -- a generated 200-rule bundle -------------------------------------------------------------

DOMAINS = (
    "billing", "orders", "crm", "infra", "db", "mail", "identity", "storage", "analytics",
    "support", "hr", "finance", "inventory", "shipping", "marketing", "security", "network",
    "catalog", "pricing", "legal",
)  # fmt: skip
CURRENCIES = ["USD", "EUR", "GBP"]


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": props,
    }


STR = {"type": "string", "maxLength": 200}
BOOL = {"type": "boolean"}

# verb: (contract, argument generator, conditions a rule or factor may use on it)
VERBS: dict[str, tuple[dict[str, Any], Callable[[random.Random, int], dict[str, Any]], list[str]]]
VERBS = {
    "create": (
        _obj(["name", "count"], name=STR, count={"type": "integer", "minimum": 1}, dry_run=BOOL),
        lambda r, n: {"name": f"item-{n}", "count": r.choice([1, 5, 20, 200, 900])}
        | ({"dry_run": r.random() < 0.5} if r.random() < 0.6 else {}),
        ["args.count > {big}", "has(args.dry_run) && !args.dry_run"],
    ),
    "update": (
        _obj(["id", "field", "value"], id=STR, field=STR, value=STR),
        lambda r, n: {"id": f"id-{n}", "field": r.choice(["owner", "title", "status"]),
                      "value": "x" * r.choice([3, 30])},
        ["args.field == 'owner'", "size(args.value) > 20"],
    ),
    "delete": (
        _obj(["id"], id=STR, cascade=BOOL, count={"type": "integer", "minimum": 1}),
        lambda r, n: {"id": f"id-{n}", "count": r.choice([1, 1, 3, 150])}
        | ({"cascade": r.random() < 0.3} if r.random() < 0.5 else {}),
        ["has(args.count) && args.count > {small}", "has(args.cascade) && args.cascade"],
    ),
    "refund": (
        _obj(["order_id", "amount", "currency"],
             order_id={"type": "string", "pattern": "^o-[0-9]+$"},
             amount={"type": "number", "exclusiveMinimum": 0}, currency={"enum": CURRENCIES},
             reason={"type": "string", "maxLength": 500}),
        lambda r, n: {"order_id": f"o-{n}", "amount": round(r.lognormvariate(4.2, 1.1), 2),
                      "currency": r.choice(CURRENCIES)},
        ["args.amount > {money}", "args.currency != 'USD'"],
    ),
    "scale": (
        _obj(["service", "replicas"], service=STR,
             replicas={"type": "integer", "minimum": 0, "maximum": 500}),
        lambda r, n: {"service": r.choice(["api", "web", "worker"]),
                      "replicas": r.choice([0, 2, 4, 8, 24, 64, 120])},
        ["args.replicas > {small}", "args.replicas == 0"],
    ),
    "restart": (
        _obj(["service"], service=STR, force=BOOL),
        lambda r, n: {"service": r.choice(["api", "web", "worker"])}
        | ({"force": r.random() < 0.2} if r.random() < 0.5 else {}),
        ["has(args.force) && args.force", "args.service == 'api'"],
    ),
    "export": (
        _obj(["dataset", "rows", "destination"], dataset=STR,
             rows={"type": "integer", "minimum": 0},
             destination={"enum": ["internal", "s3", "partner"]}),
        lambda r, n: {"dataset": f"ds-{n % 50}", "rows": r.choice([10, 1000, 50_000, 2_000_000]),
                      "destination": r.choice(["internal", "internal", "s3", "partner"])},
        ["args.rows > {rows}", "args.destination == 'partner'"],
    ),
    "send": (
        _obj(["to", "subject", "body"], to=STR, subject=STR,
             body={"type": "string", "maxLength": 20000}, campaign=STR),
        lambda r, n: {"to": f"user{n}@mail.test", "subject": "Hello", "body": "Hi there."}
        | ({"campaign": "spring"} if r.random() < 0.7 else {}),
        ["!has(args.campaign)", "size(args.subject) > 100"],
    ),
    "grant": (
        _obj(["user", "permission", "hours"], user=STR,
             permission={"enum": ["read", "write", "admin"]},
             hours={"type": "integer", "minimum": 1, "maximum": 720}),
        lambda r, n: {"user": f"u-{n % 300}",
                      "permission": r.choice(["read", "read", "write", "admin"]),
                      "hours": r.choice([1, 8, 24, 168])},
        ["args.permission == 'admin'", "args.hours > {hours}"],
    ),
    "approve": (
        _obj(["ticket", "amount", "priority"], ticket=STR, amount={"type": "number", "minimum": 0},
             priority={"enum": ["low", "normal", "urgent"]}),
        lambda r, n: {"ticket": f"t-{n}", "amount": round(r.uniform(0, 20_000), 2),
                      "priority": r.choice(["low", "normal", "normal", "urgent"])},
        ["args.amount > {money}", "args.priority == 'urgent'"],
    ),
}  # fmt: skip

CONTEXT_CONDITIONS = [
    "has(context.confidence) && context.confidence < 0.{low}",
    "!has(context.rationale) || size(context.rationale) < 10",
    "has(context.environment) && context.environment == 'prod'",
    "context.data_sources.exists(s, s.age_seconds > 3600)",
    "now.getHours() < 6 || now.getHours() > 21",
    "now.getDayOfWeek() == 0 || now.getDayOfWeek() == 6",
    "has(context.labels.ticket) && context.labels.ticket == 'none'",
]
EFFECTS = ["deny", "escalate", "require_approval", "require_approval"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        big=rng.choice([100, 500, 800]),
        small=rng.choice([10, 50, 100]),
        money=rng.choice([250, 1000, 5000]),
        rows=rng.choice([10_000, 100_000, 1_000_000]),
        hours=rng.choice([8, 24, 72]),
        low=rng.choice([3, 4, 5, 6]),
    )


def large_bundle_files(seed: int, roles: int = 20, rules: int = 200) -> dict[str, dict[str, Any]]:
    """The files of a generated bundle: `roles` roles x 10 actions, `rules` rules and factors."""
    rng = random.Random(seed)
    verbs = list(VERBS)
    role_names = [f"{d}-agents" for d in DOMAINS[:roles]]
    envelope = {
        role: {
            f"{domain}.{verb}": {"description": f"{verb} in {domain}", "args": VERBS[verb][0]}
            | ({"when": "args.amount <= 100000"} if verb == "refund" else {})
            for verb in verbs
        }
        for role, domain in zip(role_names, DOMAINS, strict=False)
    }
    agents = {
        f"{role.removesuffix('-agents')}-bot-{i}": {
            "role": role,
            "owner": f"{role}@example.com",
            "model": {"id": "model-x", "version": "1"},
            "autonomy": rng.choice([1, 2, 2, 3]),
        }
        for role in role_names
        for i in (1, 2)
    }
    items: list[tuple[str, dict[str, Any]]] = []  # ("rule" | "factor", body)

    def add(kind: str, when: str | list[str], **selector: Any) -> None:
        n = len(items)
        body: dict[str, Any] = {"id": f"{kind}-{n:03d}", **selector, "when": when}
        if kind == "rule":
            body["effect"] = rng.choice(EFFECTS)
            body["reason"] = f"generated rule {n}"
        else:
            body["points"] = rng.choice([5, 10, 15, 20, 30])
            body["reason"] = f"generated factor {n}"
        items.append((kind, body))

    # A few bundle-wide factors, like the example's confidence and rationale checks.
    for template in CONTEXT_CONDITIONS[:4]:
        add("factor", _fill(template, rng))
    # Per role: one context factor and one context rule.
    for role in role_names:
        add("factor", _fill(rng.choice(CONTEXT_CONDITIONS), rng), roles=[role])
        add("rule", _fill(rng.choice(CONTEXT_CONDITIONS[:3]), rng), roles=[role])
    # Per verb, across every domain: two factors and one rule by action pattern.
    for verb in verbs:
        conds = VERBS[verb][2]
        add("factor", _fill(conds[0], rng), actions=[f"*.{verb}"])
        add("factor", _fill(conds[1], rng), actions=[f"*.{verb}"])
        both = [_fill(conds[0], rng), _fill(CONTEXT_CONDITIONS[0], rng)]
        add("rule", both, actions=[f"*.{verb}"])
    # The rest target one (role, action) or a domain's actions of a role.
    while len(items) < rules:
        index = rng.randrange(roles)
        role, domain, verb = role_names[index], DOMAINS[index], rng.choice(verbs)
        cond = _fill(rng.choice(VERBS[verb][2]), rng)
        if rng.random() < 0.3:
            cond = f"{cond} && {_fill(rng.choice(CONTEXT_CONDITIONS[:3]), rng)}"
        add(rng.choice(["rule", "factor"]), cond, roles=[role], actions=[f"{domain}.{verb}"])
    return {
        "roles.yaml": {"roles": {r: {"envelope": envelope[r]} for r in role_names}},
        "agents.yaml": {"agents": agents},
        "rules.yaml": {"rules": [body for kind, body in items if kind == "rule"]},
        "risk.yaml": {
            "risk": {"factors": [body for kind, body in items if kind == "factor"]},
            "autonomy": {
                "levels": {
                    0: {"max_risk": 0},
                    1: {"max_risk": 20},
                    2: {"max_risk": 45},
                    3: {"max_risk": 70},
                },
                "ceiling": 120,
            },
            "budgets": [
                {
                    "id": "refunds-per-hour",
                    "actions": ["*.refund"],
                    "window": "1h",
                    "max_count": 40,
                    "max_risk": 600,
                    "reason": "hourly refund budget spent",
                },
                {
                    "id": "grants-per-day",
                    "actions": ["*.grant"],
                    "window": "1d",
                    "max_count": 20,
                    "reason": "daily grant budget spent",
                },
            ],
        },
        "routes.yaml": {
            "defaults": {"route": "ops-review"},
            "routes": {
                "ops-review": {"groups": ["ops"], "sla": "2h", "on_timeout": "deny"},
                "security-review": {"groups": ["security"], "sla": "30m", "on_timeout": "deny"},
            },
            "data": [{"field": "args.to", "actions": ["*.send"], "store": "mask"}],
        },
    }


def write_bundle(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    yaml = YAML()
    yaml.default_flow_style = False
    for name, content in files.items():
        with (folder / name).open("w") as out:
            yaml.dump(content, out)


def large_requests(bundle: Bundle, count: int, seed: int) -> list[ActionRequest]:
    """Requests for the generated bundle: each agent's own actions, a few outside it."""
    rng = random.Random(seed)
    fleet = Fleet(seed)  # borrowed for realistic context
    agents = sorted(bundle.agents)
    out = []
    for n in range(count):
        agent = rng.choice(agents)
        role = bundle.agents[agent].role
        actions = bundle.roles[role]
        if rng.random() < 0.02:  # an action of another role: outside the envelope
            action = f"{rng.choice([d for d in DOMAINS if not role.startswith(d)])}.delete"
        else:
            action = rng.choice(actions)
        verb = action.rsplit(".", 1)[1]
        args = VERBS[verb][1](rng, n)
        if rng.random() < 0.01:
            args["unexpected"] = True  # a contract the agent gets wrong now and then
        context = fleet._context(env=rng.choice([None, "prod", "staging"]))
        if rng.random() < 0.5:
            context["data_sources"] = [{"name": "warehouse", "age_seconds": rng.choice([60, 7200])}]
        if rng.random() < 0.3:
            context["labels"] = {"ticket": rng.choice(["none", "T-1"])}
        out.append(ActionRequest.from_json({"agent": agent, "action": action, "args": args,
                                            "context": context}))  # fmt: skip
    return out


# -- the report ------------------------------------------------------------------------------


def plan_sizes(bundle: Bundle) -> str:
    sizes = [len(p.conditions) for p in bundle.plans.values()]
    return f"{len(bundle.plans)} plans, {min(sizes)}-{max(sizes)} conditions each"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per pass")
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the requests")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str, str, str]] = []

    def row(label: str, samples: Sequence[int], target: str = "") -> tuple[float, float]:
        n, p50, p99, mean = summary(samples)
        rows.append((label, f"{n:,}", f"{p50:.1f}", f"{p99:.1f}", f"{mean:.1f}", target))
        return p50, p99

    def note(label: str, value: str) -> None:
        rows.append((label, "", "", "", "", value))

    times = clock_times(args.requests, args.seed)

    start = time.perf_counter()
    example = load_bundle(EXAMPLE_POLICY)
    note("example bundle: load + compile", f"{(time.perf_counter() - start) * 1e3:.0f} ms")
    requests = fleet_requests(args.requests, args.seed)
    samples = measure(example, requests, times, args.passes, collect=False)
    ex50, ex99 = row("example bundle, fleet mix, gc off", samples)
    met = ex50 <= TARGET_P50_US and ex99 <= TARGET_P99_US
    target = f"p50 <= {TARGET_P50_US:.0f}, p99 <= {TARGET_P99_US:.0f} "
    rows[-1] = (*rows[-1][:5], target + ("MET" if met else "MISSED"))
    with_gc = measure(example, requests, times, args.passes, collect=True)
    row("example bundle, fleet mix, gc on", with_gc)
    kinds = [kind_of(example, r, t) for r, t in zip(requests, times, strict=True)]
    per_pass = len(requests)
    by_kind: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        by_kind.setdefault(kinds[i % per_pass], []).append(sample)
    for kind in sorted(by_kind, key=lambda k: -len(by_kind[k])):
        row(f"  {kind}", by_kind[kind])

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "large"
        folder.mkdir()
        write_bundle(folder, large_bundle_files(args.seed))
        start = time.perf_counter()
        large = load_bundle(folder)
        load_ms = (time.perf_counter() - start) * 1e3
    note(f"200-rule bundle: load + compile ({plan_sizes(large)})", f"{load_ms:.0f} ms")
    big_requests = large_requests(large, args.requests, args.seed)
    big = measure(large, big_requests, times, args.passes, collect=False)
    big50, big99 = row("200-rule bundle, generated mix, gc off", big)
    row("200-rule bundle, generated mix, gc on",
        measure(large, big_requests, times, args.passes, collect=True))  # fmt: skip
    big_kinds = [kind_of(large, r, t) for r, t in zip(big_requests, times, strict=True)]
    special: dict[str, list[int]] = {}
    for i, sample in enumerate(big):
        kind = big_kinds[i % per_pass]
        special.setdefault(kind if kind.startswith("(") else "(in envelope)", []).append(sample)
    for kind in sorted(special, key=lambda k: -len(special[k])):
        row(f"  {kind}", special[kind])
    ratio50, ratio99 = big50 / ex50, big99 / ex99
    verdict = "MET" if ratio50 <= TARGET_RATIO and ratio99 <= TARGET_RATIO else "MISSED"
    note(
        "ratio 200-rule / example",
        f"p50 {ratio50:.2f}x, p99 {ratio99:.2f}x (target <= {TARGET_RATIO:.0f}x) {verdict}",
    )

    print_table(rows)


def print_table(rows: Sequence[tuple[str, str, str, str, str, str]]) -> None:
    headers = ("measurement", "n", "p50 µs", "p99 µs", "mean µs", "target / note")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in (headers, tuple("-" * w for w in widths), *rows):
        label, *numbers, note = line
        cells = [f"{label:<{widths[0]}}"]
        cells += [f"{v:>{w}}" for v, w in zip(numbers, widths[1:5], strict=True)]
        print("  ".join([*cells, note]).rstrip())


if __name__ == "__main__":
    main()
