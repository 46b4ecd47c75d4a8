"""Charter's errors: one hierarchy, each with a stable code and a location.

Every error a person can meet says what was wrong, where, and (where it helps) what to do.
Messages are lowercase, quote user input in backticks and never name internal types.

```
CharterError                    base of everything Charter raises on purpose
├── PolicyInvalid               a bundle failed `charter check`; carries every Problem found
├── RequestInvalid              an action request is malformed (names the field)
├── IdempotencyConflict         an idempotency key came back with a different request
├── GrantRefused                a grant cannot be redeemed (unknown, used, expired, other args)
├── NotFound                    no such decision, approval or key
├── Conflict                    the request contradicts what is recorded (a second outcome)
├── Forbidden                   the key may not do this (its role or reviewer groups)
├── TooManyPending              the agent has as many approvals pending as it may
├── CannotListen                `serve` cannot bind its address (in use, not this machine's)
├── LedgerError                 the ledger cannot be read or written as asked
│   ├── LedgerIntegrityError    the stored ledger does not verify
│   ├── EventError              an event cannot enter the ledger (kind, time or payload)
│   ├── CheckpointError         a checkpoint or key is malformed, or its signature fails
│   ├── ProofError              a Merkle proof does not prove what it claims
│   ├── StoreError              the store cannot do what was asked (`charter.store`)
│   └── StoreUnavailable        the database cannot be reached or written now; fail closed
└── ReplayError                 a recorded entry cannot be replayed (bundle missing, bad record)

The three verification errors are `ValueError`s too, as they were before they joined the tree.
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CannotListen",
    "CharterError",
    "CheckpointError",
    "Conflict",
    "EventError",
    "Forbidden",
    "GrantRefused",
    "IdempotencyConflict",
    "LedgerError",
    "LedgerIntegrityError",
    "NotFound",
    "PolicyInvalid",
    "Problem",
    "ProofError",
    "ReplayError",
    "RequestInvalid",
    "StoreUnavailable",
    "TooManyPending",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy bundle, located as precisely as the source allows.

    `line` and `col` are 1-based; 0 means the location is the whole file.
    """

    file: str
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.code}: {self.message}"


class CharterError(Exception):
    """Base class of every error Charter raises deliberately.

    `code` is stable across releases so callers (and the HTTP layer) can branch on it.
    """

    code: str = "charter_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class PolicyInvalid(CharterError):
    """A policy bundle has one or more problems; none of it is used.

    A bundle is all or nothing: a half-valid policy would decide differently from what its
    author reviewed, so loading stops at the first invalid bundle and reports every problem.
    """

    code = "policy_invalid"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        first = f"\n{self.problems[0]}" if self.problems else ""
        more = f"\n(and {count - 1} more)" if count > 1 else ""
        super().__init__(f"policy bundle has {count} problem(s):{first}{more}")

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class RequestInvalid(CharterError):
    """An action request is malformed; `field` is the dotted path of the offending value."""

    code = "request_invalid"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"`{field}`: {message}" if field else message)


class IdempotencyConflict(CharterError):
    """An idempotency key was used before with a different request; nothing was decided."""

    code = "idempotency_conflict"


class GrantRefused(CharterError):
    """A grant was not redeemed; `code` says why and the refusal is in the ledger.

    Codes: `grant_unknown` (no such grant, or the token does not match), `grant_used`,
    `grant_expired`, `args_mismatch` (the arguments are not the ones decided on).
    """

    code = "grant_refused"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class NotFound(CharterError):
    """No such decision, grant or key."""

    code = "not_found"


class Conflict(CharterError):
    """The request contradicts what is already recorded, such as a second outcome."""

    code = "conflict"


class Forbidden(CharterError):
    """The caller may not take this step; `code` says why (answered 403)."""

    code = "forbidden"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class TooManyPending(CharterError):
    """An agent has as many approvals pending as it may; this one was refused (429).

    The decision is recorded, and so is the refusal; `decision_id` names it.
    """

    code = "too_many_pending"

    def __init__(self, message: str, decision_id: str) -> None:
        super().__init__(message)
        self.decision_id = decision_id


class CannotListen(CharterError):
    """The server cannot listen where it was asked; nothing was opened or announced."""

    code = "cannot_listen"


class LedgerError(CharterError):
    """The ledger could not be read or written as asked."""

    code = "ledger_error"


class StoreUnavailable(LedgerError):
    """The database cannot be reached or written now; nothing was acknowledged.

    The outage kind of ledger failure (the server is down or unreachable, its connection
    dropped, the disk is full or the file unwritable), as opposed to a request the store
    refuses. For a decision it means `deny` (`verdict`, `reason`): the caller holds no
    recorded decision and no grant, so the action must not run. It is transient: the
    same call succeeds once the database is back, with no restart.

    A connection lost while its commit was under way may have left the entry in the
    ledger all the same, never acknowledged; ask again with the same idempotency key to
    get that decision back rather than a second one.
    """

    code = "store_unavailable"
    #: What a decision that meets this error comes to: the action must not run.
    verdict = "deny"
    #: The reason a refused decision gives, the same words on every front door.
    reason = "store unavailable"


class LedgerIntegrityError(LedgerError):
    """The stored ledger does not verify; `seq` is the first entry that breaks."""

    code = "ledger_integrity"

    def __init__(self, seq: int, message: str) -> None:
        self.seq = seq
        super().__init__(f"entry {seq}: {message}")


class EventError(LedgerError, ValueError):
    """An event cannot enter the ledger: bad kind, timestamp or payload."""

    code = "event_invalid"


class CheckpointError(LedgerError, ValueError):
    """A checkpoint's signature does not verify, or a key or checkpoint is malformed."""

    code = "checkpoint_invalid"


class ProofError(LedgerError, ValueError):
    """A Merkle proof does not prove what it claims, or its inputs are malformed."""

    code = "proof_invalid"


class ReplayError(CharterError):
    """A recorded entry cannot be replayed, for example because its bundle is missing."""

    code = "replay_error"
