"""The `charter` command line: check, decide, test, ledger, replay, demo, init.

Exit codes are part of the contract: 0 success; 1 the thing checked is not right (a
policy problem, a failing scenario, a ledger that does not verify, a replay that does not
reproduce); 2 the command was used wrongly (a malformed request, a missing file, a file
that is not a Charter ledger this version reads).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from charter._cli_autonomy import autonomy_app
from charter._cli_halts import halt_command, halts_command, resume_command
from charter._cli_monitors import alerts_command, monitors_command
from charter._cli_serve import migrate_command, serve_command
from charter._cli_store import (
    DbOption,
    StoreOption,
    err,
    keys_app,
    load_policy,
    out,
    print_problems,
)
from charter._cli_store import open_reading as _open_reading
from charter._cli_store import open_writing as _open_writing
from charter._cli_store import shown as _shown
from charter._cli_store import target as _target
from charter.errors import CharterError, Problem, RequestInvalid, StoreUnavailable
from charter.examples import EXAMPLE_POLICY
from charter.ledger import (
    ReplayReport,
    StateCheck,
    events,
    generate_signing_key,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
)
from charter.model import ActionRequest, AgentState, Decision
from charter.policy import (
    decide,
    format_seconds,
    load_scenarios,
    run_scenarios,
)
from charter.service import Charter, format_time, replay_ledger, system_clock
from charter.store import (
    StoreOpenError,
    checkpoint_store,
    verify_store,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="charter",
    help="Charter: policy-as-code decisions for AI agents' actions, and a tamper-evident ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ledger_app = typer.Typer(help="Inspect and verify a ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


PolicyDir = Annotated[Path, typer.Argument(help="The policy bundle folder.", show_default=False)]


@app.command()
def check(policy: PolicyDir) -> None:
    """Validate a policy bundle: exit 0, or 1 with every problem as file:line:col: code: message."""
    bundle = load_policy(policy)
    actions = sum(len(a) for a in bundle.roles.values())
    out.print(
        f"[green]ok[/green] {policy}: {len(bundle.roles)} roles, {actions} actions, "
        f"{len(bundle.agents)} agents, {len(bundle.rule_ids)} rules/factors/budgets\n"
        f"version {bundle.version}"
    )


def _read_request(source: str | None) -> Any:
    if source is None or source == "-":
        text = sys.stdin.read()
        where = "standard input"
    else:
        path = Path(source)
        if not path.is_file():
            err.print(f"error: request file `{source}` does not exist")
            raise typer.Exit(2)
        text = path.read_text(encoding="utf-8")
        where = source

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise RequestInvalid(key, "appears twice in the same object")
        return dict(pairs)

    def constants(name: str) -> float:
        # Let NaN and Infinity through so the request check can name the field they are in.
        return float(name)

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=constants)
    except json.JSONDecodeError as exc:
        err.print(f"error: {where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}")
        raise typer.Exit(2) from None
    except RequestInvalid as exc:
        err.print(f"error: {where}: {exc.message}")
        raise typer.Exit(2) from None


def _parse_now(value: str | None) -> dt.datetime:
    if value is None:
        return system_clock()
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        err.print(
            f"error: --now `{value}` must be an RFC 3339 time with a zone, "
            "e.g. 2026-03-02T10:00:00Z"
        )
        raise typer.Exit(2)
    return moment


def _explain(decision: Decision) -> None:
    colour = {"allow": "green", "require_approval": "yellow", "escalate": "magenta", "deny": "red"}
    verdict = decision.verdict.value
    out.print(f"[bold {colour[verdict]}]{verdict.upper()}[/]  {decision.agent} → {decision.action}")
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_row("role", str(decision.role))
    summary.add_row(
        "risk",
        f"{decision.risk}  (autonomy level {decision.autonomy_level} may take "
        f"{decision.autonomy_max_risk} alone; ceiling {decision.ceiling})",
    )
    if decision.route:
        r = decision.route
        summary.add_row(
            "route",
            f"{r.id}: groups {', '.join(r.groups)}, {r.approvals} approval(s), "
            f"SLA {format_seconds(r.sla_seconds)}, on timeout {r.on_timeout}",
        )
    if decision.runbook:
        summary.add_row("runbook", decision.runbook)
    summary.add_row("policy", decision.policy_version)
    out.print(summary)
    if decision.factors:
        factors = Table(title="risk factors", title_justify="left")
        factors.add_column("factor")
        factors.add_column("points", justify="right")
        factors.add_column("why")
        for f in decision.factors:
            factors.add_row(f.id, str(f.points), f.reason)
        out.print(factors)
    reasons = Table(title="reasons", title_justify="left")
    reasons.add_column("step")
    reasons.add_column("rule")
    reasons.add_column("why")
    for reason in decision.reasons:
        reasons.add_row(reason.code, reason.rule or "", reason.message)
    out.print(reasons)


@app.command("decide")
def decide_command(
    policy: Annotated[Path, typer.Option("--policy", help="The policy bundle folder.")],
    request: Annotated[
        str | None, typer.Option("--request", help="A JSON request file, or - for standard input.")
    ] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show a readable table.")] = False,
    now: Annotated[
        str | None, typer.Option("--now", help="Decide as of this time (RFC 3339); default now.")
    ] = None,
    autonomy: Annotated[
        int | None, typer.Option("--autonomy", help="Override the agent's autonomy level.")
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="Also record the decision in this ledger.")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Also record the decision in this store: a PostgreSQL URL or a SQLite file.",
        ),
    ] = None,
) -> None:
    """Decide one action request and print the decision (exit 0 whatever the verdict)."""
    # No CHARTER_STORE here: deciding records nothing unless asked to on the command line.
    where = _target(db, store) if db is not None or store is not None else None
    bundle = load_policy(policy)
    raw = _read_request(request)
    try:
        parsed = ActionRequest.from_json(raw)
    except RequestInvalid as exc:
        err.print(f"error: malformed request: {exc.message}")
        raise typer.Exit(2) from None
    moment = _parse_now(now)
    if where is not None and autonomy is not None:
        err.print(
            "error: `--autonomy` only applies to a decision that is not recorded; a recorded "
            "decision uses the autonomy level the ledger holds for the agent"
        )
        raise typer.Exit(2)
    if where is not None:
        try:
            with Charter(bundle, where, clock=lambda: moment) as charter:
                record = charter.decide(parsed)
        except (StoreOpenError, StoreUnavailable) as exc:
            err.print(f"error: {exc.message}", markup=False)
            raise typer.Exit(2) from None
        if explain:
            _explain(record.decision)
            out.print(f"recorded as entry {record.seq} of {_shown(where)} (decision {record.id})")
        else:
            print(json.dumps(record.to_json(), indent=2, ensure_ascii=False))
        return
    decision = decide(parsed, bundle, AgentState(autonomy=autonomy), moment)
    if explain:
        _explain(decision)
    else:
        print(json.dumps(decision.to_json(), indent=2, ensure_ascii=False))


@app.command("test")
def run_tests(
    policy: PolicyDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run the bundle's scenario suites (scenarios/*.yaml); exit 1 on any failure."""
    bundle = load_policy(policy)
    problems: list[Problem] = []
    scenarios = load_scenarios(policy, problems)
    if problems:
        print_problems(problems, policy)
        raise typer.Exit(1)
    if not scenarios:
        err.print(f"error: {policy} has no scenarios: add cases under {policy / 'scenarios'}/")
        raise typer.Exit(1)
    report = run_scenarios(bundle, scenarios)
    if as_json:
        print(
            json.dumps(
                {
                    "passed": len(report.results) - len(report.failed),
                    "failed": [
                        {
                            "name": r.scenario.name,
                            "file": r.scenario.file,
                            "line": r.scenario.line,
                            "differences": list(r.differences),
                        }
                        for r in report.failed
                    ],
                    "uncovered": report.uncovered,
                },
                indent=2,
            )
        )
    else:
        for result in report.results:
            s = result.scenario
            if result.passed:
                out.print(f"[green]PASS[/green] {s.name}")
            else:
                out.print(f"[red]FAIL[/red] {s.name}  ({policy / s.file}:{s.line})")
                for line in result.differences:
                    out.print(f"       [red]-[/red] {line}")
        covered = report.total_rules - len(report.uncovered)
        out.print(
            f"\n{len(report.results) - len(report.failed)} passed, {len(report.failed)} failed; "
            f"rule coverage {covered}/{report.total_rules}"
        )
        if report.uncovered:
            out.print(
                "[yellow]not exercised by any scenario:[/yellow] " + ", ".join(report.uncovered)
            )
    if report.failed:
        raise typer.Exit(1)


@ledger_app.command("verify")
def ledger_verify(
    db: DbOption = None,
    store_url: StoreOption = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="PEM key to check checkpoint signatures.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Also check every payload is canonical JSON (slower)."),
    ] = False,
) -> None:
    """Verify the hash chain; exit 1 naming the first entry that breaks."""
    store = _open_reading(_target(db, store_url))
    key = _read_key(public_key, load_public_key) if public_key else None
    started = time.perf_counter()
    report = verify_store(store, key, check_canonical=strict)
    elapsed = time.perf_counter() - started
    store.close()
    if report.ok:
        out.print(
            f"[green]ok[/green] {report.count} entries verified in {elapsed:.2f}s; "
            f"head {report.head.seq} {report.head.chain_hash}"
            + (
                f"; checkpoint at {report.checkpoint_size} matches"
                if report.checkpoint_size
                else ""
            )
        )
        return
    out.print(f"[red]BROKEN[/red] {report.problem}")
    raise typer.Exit(1)


def _read_key(path: Path, loader: Any) -> Any:
    try:
        return loader(path.read_bytes())
    except (OSError, ValueError) as exc:
        err.print(f"error: cannot read key `{path}`: {exc}")
        raise typer.Exit(2) from None


@ledger_app.command("keygen")
def ledger_keygen(
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the private key (PEM).")],
) -> None:
    """Create an Ed25519 signing key for checkpoints; the public key goes beside it (.pub)."""
    public = out_path.with_name(out_path.name + ".pub")
    if out_path.exists() or public.exists():
        err.print(f"error: `{out_path}` or `{public}` exists; keys are never overwritten")
        raise typer.Exit(2)
    key = generate_signing_key()
    out_path.touch(mode=0o600)
    out_path.write_bytes(private_key_pem(key))
    public.write_bytes(public_key_pem(key.public_key()))
    out.print(f"wrote {out_path} (keep it secret) and {public} (give it to auditors)")


@ledger_app.command("checkpoint")
def ledger_checkpoint(
    key: Annotated[Path, typer.Option("--key", help="The private signing key (PEM).")],
    db: DbOption = None,
    store_url: StoreOption = None,
) -> None:
    """Sign a checkpoint of the ledger as it is now (size, Merkle root, chain head)."""
    private = _read_key(key, load_private_key)
    store = _open_writing(_target(db, store_url))
    try:
        signed = checkpoint_store(store, private, at=format_time(system_clock()))
    finally:
        store.close()
    cp = signed.checkpoint
    out.print(
        f"checkpoint: {cp.tree_size} entries, root {cp.root_hash}, head {cp.chain_head}, "
        f"signed by key {signed.key_id}"
    )


@ledger_app.command("show")
def ledger_show(
    db: DbOption = None,
    store_url: StoreOption = None,
    last: Annotated[int, typer.Option("--last", "-n", help="How many entries, from the end.")] = 10,
    kind: Annotated[str | None, typer.Option("--kind", help="Only entries of this kind.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the last entries of a ledger."""
    store = _open_reading(_target(db, store_url))
    head = store.head().seq
    entries = list(
        store.entries(
            after=max(0, head - last) if kind is None else 0, kinds=(kind,) if kind else None
        )
    )[-last:]
    store.close()
    if as_json:
        for e in entries:
            print(
                json.dumps(
                    {
                        "seq": e.seq,
                        "kind": e.kind,
                        "at": e.at,
                        "chain_hash": e.chain_hash,
                        "payload": e.payload_object(),
                    },
                    ensure_ascii=False,
                )
            )
        return
    table = Table()
    for col in ("seq", "at", "kind", "summary", "chain hash"):
        table.add_column(col)
    for e in entries:
        p = e.payload_object()
        if e.kind == events.DECISION:
            d = p["decision"]
            summary = f"{d['agent']} {d['action']} → {d['verdict']} (risk {d['risk']})"
        elif e.kind == events.POLICY_DEPLOYED:
            summary = f"policy {p['version'][:19]}…"
        else:
            summary = json.dumps(p, ensure_ascii=False)[:80]
        table.add_row(str(e.seq), e.at, e.kind, summary, e.chain_hash[:16] + "…")
    out.print(table)


def _print_state_check(check: StateCheck) -> None:
    """One line: did each decision record the state the ledger before it gives?"""
    if not check.differing:
        out.print(
            f"state: {check.checked} decisions recorded the halts, autonomy, registry and "
            "budget use the ledger before them gives"
        )
        return
    first = "; ".join(f"seq {seq}: {', '.join(fields)}" for seq, fields in check.examples)
    out.print(
        f"[yellow]state: {check.differing} of {check.checked} decisions recorded a state "
        f"the ledger before them does not give[/yellow] (first: {first}); a decision taken "
        "while a halt or change was on its way does so, anything else is a defect",
        markup=True,
    )


def _print_replay(report: ReplayReport) -> None:
    mode = (
        "verify (recorded versions)"
        if report.against is None
        else f"what-if against {report.against}"
    )
    out.print(
        f"replay: {mode}: {report.total} decisions, {report.unchanged} unchanged, "
        f"{report.changed} changed"
    )
    if report.state is not None:
        _print_state_check(report.state)
    if report.transitions:
        table = Table(title="verdict transitions", title_justify="left")
        table.add_column("from")
        table.add_column("to")
        table.add_column("count", justify="right")
        for (a, b), n in report.transitions.most_common():
            table.add_row(a, b, str(n))
        out.print(table)
    if report.by_rule:
        table = Table(title="by rule", title_justify="left")
        table.add_column("rule")
        table.add_column("newly fired", justify="right")
        table.add_column("no longer fired", justify="right")
        for rule, counts in sorted(report.by_rule.items()):
            table.add_row(rule, str(counts["newly_fired"]), str(counts["no_longer_fired"]))
        out.print(table)
    if report.by_agent:
        table = Table(title="by agent", title_justify="left")
        table.add_column("agent")
        table.add_column("changes")
        for agent, moves in sorted(report.by_agent.items()):
            table.add_row(agent, ", ".join(f"{a}→{b}: {n}" for (a, b), n in moves.most_common()))
        out.print(table)
    for (a, b), items in report.examples.items():
        for item in items:
            out.print(
                f"  e.g. entry {item['seq']}: {item['agent']} {item['action']} {a}→{b}, "
                f"risk {item['risk'][0]}→{item['risk'][1]}"
                + (f", +{','.join(item['rules_added'])}" if item["rules_added"] else "")
                + (f", -{','.join(item['rules_removed'])}" if item["rules_removed"] else "")
            )
    for m in report.mismatches:
        out.print(f"[red]MISMATCH[/red] entry {m['seq']}: " + "; ".join(m["differences"]))
    for seq, message in report.errors:
        out.print(f"[red]ERROR[/red] entry {seq}: {message}")


@app.command("replay")
def replay_command(
    db: DbOption = None,
    store_url: StoreOption = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Replay under this bundle instead (what-if).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Processes to replay with (default: by ledger size)."),
    ] = None,
) -> None:
    """Re-decide recorded requests: verify the record, or preview another policy's effect."""
    against = load_policy(policy) if policy is not None else None
    target = _target(db, store_url)
    _open_reading(target).close()
    started = time.perf_counter()
    try:
        report = replay_ledger(target, against, workers=workers)
    except StoreOpenError as exc:  # replaced or changed since it was checked
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    except CharterError as exc:
        err.print(f"error: {exc.message}")
        raise typer.Exit(1) from None
    elapsed = time.perf_counter() - started
    if as_json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_replay(report)
        rate = report.total / elapsed if elapsed > 0 else 0.0
        out.print(f"replayed in {elapsed:.2f}s ({rate:,.0f} decisions/s)")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Where to write the example policy bundle.")],
) -> None:
    """Copy the shipped example policy bundle into FOLDER to start your own."""
    if folder.exists() and any(folder.iterdir()):
        err.print(f"error: `{folder}` exists and is not empty; choose a new folder")
        raise typer.Exit(2)
    shutil.copytree(EXAMPLE_POLICY, folder, dirs_exist_ok=True)
    out.print(f"wrote the example bundle to {folder}; next: charter check {folder}")


class DemoScenario(enum.StrEnum):
    """The stories `charter demo` tells."""

    fleet = "fleet"
    drift = "drift"


#: Each scenario's ledger file when neither --db nor --store is given: the drift story
#: needs a ledger of its own (it records the day before now).
_DEMO_FILES = {DemoScenario.fleet: "charter-demo.db", DemoScenario.drift: "charter-drift.db"}


@app.command()
def demo(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            help="The demo ledger file.  [default: charter-demo.db; charter-drift.db for"
            " --scenario drift]",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="The demo's store instead: a PostgreSQL URL (migrated with `charter migrate`)"
            " or a SQLite file.",
        ),
    ] = None,
    requests: Annotated[
        int, typer.Option("--requests", "-n", help="How many requests (fleet scenario).")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated traffic.")] = 7,
    scenario: Annotated[
        DemoScenario,
        typer.Option(
            "--scenario",
            help="fleet: a morning of four agents' traffic; drift: one agent's inputs drift"
            " and its refunds fail until the monitors demote it (ends a minute before now,"
            " for `charter serve` to show).",
        ),
    ] = DemoScenario.fleet,
) -> None:
    """Run a simulated fleet of agents through the example policy, then audit the ledger."""
    # Imported here: keeps every other command's start fast.
    from charter._demo_drift import run_drift  # noqa: PLC0415
    from charter.demo import run_demo  # noqa: PLC0415
    from charter.errors import Conflict  # noqa: PLC0415 - the drift story's ledger is not new

    # No CHARTER_STORE here: the demo's simulated traffic must never land in a real ledger
    # because of the environment it was started in.
    where = _target(db, store, default=Path(_DEMO_FILES[scenario]))
    try:
        if scenario is DemoScenario.drift:
            code = run_drift(where, seed, out)
        else:
            code = run_demo(where, requests, seed, out)
    except (StoreOpenError, StoreUnavailable, Conflict) as exc:
        err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the `charter` script.

    A ledger found damaged part-way through a command (a page SQLite cannot read) is
    refused on one line naming the file, with exit 2, as one damaged at opening is.
    """
    try:
        app()
    except StoreOpenError as exc:
        err.print(f"error: {exc.message}", markup=False)
        raise SystemExit(2) from None


# -- serve and keys (the HTTP API and its API keys) ------------------------------------

app.add_typer(keys_app, name="keys")
app.command("halt")(halt_command)
app.command("resume")(resume_command)
app.command("halts")(halts_command)
app.command("monitors")(monitors_command)
app.command("alerts")(alerts_command)
app.add_typer(autonomy_app, name="autonomy")
app.command("migrate")(migrate_command)
app.command("serve")(serve_command)
