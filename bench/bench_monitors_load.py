"""What the monitors cost on the hot path: `POST /v1/decisions` at 32 connections.

Run: python bench/bench_monitors_load.py [--duration 5] [--connections 32] [--rounds 8].
Prints one table.

Starts two `charter serve` processes side by side (each its own SQLite ledger in a
temporary folder, one uvicorn worker, the example policy with its `watch.yaml`
monitors, alert rules and autonomy rules, on a free loopback port):

- **monitors on**: `charter serve` as it starts by default: every second a thread folds
  the new ledger entries into the rolling figures, and every five seconds the leading
  process judges the alert and autonomy rules on them;
- **monitors off**: `--no-monitors`: nothing follows the ledger into the figures.

wrk (Debian's `wrk`, one thread) loads each in turn, round after round, with the
requests of `bench_server.py` (allowed `crm.note`s with a stated confidence, each folded
into the agent's and action's figures), as `bench_tracing.py` does; the ratio is the
median of the rounds' own ratios. The target: on >= 0.90 x off, in decisions/s and in
the server's CPU per decision (the figure that holds on a shared machine).
"""

from __future__ import annotations

from bench_tracing import Setup, arguments, report, run_setups

TARGET_MONITORS = 0.90  # decisions/s with monitors over without, same run, 32 connections

SETUPS = (
    Setup("monitors off (--no-monitors)", ("--no-monitors",)),
    Setup("monitors on (the default)", ()),
)


def main() -> None:
    args = arguments(__doc__ or "")
    runs, lines = run_setups(SETUPS, args)
    report(SETUPS, runs, lines, args, judged=SETUPS[1], target=TARGET_MONITORS)


if __name__ == "__main__":
    main()
