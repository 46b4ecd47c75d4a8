"""Helpers for the reviewer UI tests: a real `charter serve` with a reviewer's keys.

The server runs as a subprocess on 127.0.0.1 on a fresh ledger (a SQLite file, or a
PostgreSQL database through `--store`), under `timeout` so it stops by itself even if
the test process dies (`tests/_serve.py`). The browser is Debian's Chromium driven by
Playwright (`tests/_browser.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from _serve import Serving, create_key, serve


@dataclass
class Keys:
    alice: str  # reviewer in finance: refunds are routed to her
    bob: str  # reviewer in ops only
    agent: str  # support-bot


@dataclass
class Server(Serving):
    db: str  # the store: a SQLite file, or a PostgreSQL URL
    keys: Keys


def start_server(db: str) -> Server:
    """`charter serve` on the fresh ledger `db` (a SQLite file or a PostgreSQL URL).

    With Alice (finance), Bob (ops) and an agent key.
    """
    keys = Keys(
        alice=create_key(
            db, "--role", "reviewer", "--label", "alice@example.com", "--groups", "finance"
        ),
        bob=create_key(db, "--role", "reviewer", "--label", "bob@example.com", "--groups", "ops"),
        agent=create_key(db, "--role", "agent", "--agent", "support-bot"),
    )
    running = serve(db)
    return Server(running.url, running.process, db, keys)
