"""The shapes of bodies and answers, as pydantic models.

They describe the API in `/openapi.json` and validate the small bodies (grant redemption,
outcomes, agent changes). Decision requests are checked by `ActionRequest.from_json`, the
same check the embedded library applies, so the API and the library refuse alike; the
`DecisionRequest` model documents that check and is built from the same constants
(`charter.model`), and a test holds the two to the same answers. Answer models allow extra
fields: the gateway may add information without breaking clients.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from charter.model import ACTION_NAME, CONTEXT_FIELDS, MAX_ID

__all__ = [
    "AgentPut",
    "AgentView",
    "Context",
    "DataSource",
    "DecisionAnswer",
    "DecisionRequest",
    "DecisionState",
    "ErrorBody",
    "ErrorDetail",
    "Grant",
    "LedgerEntryView",
    "LedgerPage",
    "OutcomeAnswer",
    "OutcomeReport",
    "RedeemAnswer",
    "RedeemRequest",
    "Status",
    "VerifyAnswer",
]

_ID = Field(min_length=1, max_length=MAX_ID)
# A name the model requires: not blank, at most `MAX_ID` characters.
_NAME = Field(max_length=MAX_ID, pattern=r"\S")
# `str.isprintable()` as a pattern: no control, format, private, unassigned or separator
# character but the space, and not only spaces.
_PRINTABLE = r"^(?: |[^\p{C}\p{Z}])*[^\p{C}\p{Z}](?: |[^\p{C}\p{Z}])*$"


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class DataSource(_Closed):
    """A source of data the agent relied on, and how old it was."""

    name: str = _NAME
    age_seconds: float | None = Field(default=None, ge=0)


class Context(_Closed):
    """What the agent says about its situation; policies read it as `context`."""

    confidence: float | None = Field(
        default=None, ge=0, le=1, description=CONTEXT_FIELDS["confidence"]
    )
    environment: str | None = Field(
        default=None, max_length=MAX_ID, description=CONTEXT_FIELDS["environment"]
    )
    rationale: str | None = Field(default=None, description=CONTEXT_FIELDS["rationale"])
    alternatives: list[str] | None = Field(default=None, description=CONTEXT_FIELDS["alternatives"])
    data_sources: list[DataSource] | None = Field(
        default=None, description=CONTEXT_FIELDS["data_sources"]
    )
    labels: dict[str, str | float | bool] | None = Field(
        default=None, description=CONTEXT_FIELDS["labels"]
    )


class DecisionRequest(_Closed):
    """An action an agent proposes: who, what, with which arguments, in what situation."""

    agent: str = _NAME
    action: str = Field(max_length=MAX_ID, pattern=ACTION_NAME.pattern)
    args: dict[str, JsonValue] | None = Field(
        default_factory=dict,
        description="The action's arguments, checked by its contract (`null` is `{}`).",
    )
    context: Context | None = Field(default_factory=Context)
    idempotency_key: str | None = Field(
        default=None,
        max_length=MAX_ID,
        pattern=_PRINTABLE,
        description="Repeating a request with the same key returns the same decision "
        "(also accepted as the `Idempotency-Key` header).",
    )
    trace_id: str | None = Field(default=None, max_length=MAX_ID)


class Grant(_Open):
    """A single-use permission to run exactly the decided arguments, once."""

    id: str
    token: str | None = Field(
        default=None, description="The secret to redeem with; only in the decision's answer."
    )
    expires_at: str
    args_hash: str


class DecisionAnswer(_Open):
    """A recorded decision, with a grant when the verdict is `allow`."""

    id: str
    seq: int
    at: str
    verdict: Literal["allow", "require_approval", "escalate", "deny"]
    risk: int
    factors: list[dict[str, JsonValue]]
    reasons: list[dict[str, JsonValue]]
    policy_version: str
    grant: Grant | None = None
    idempotent_replay: bool = False


class DecisionState(_Open):
    """A decision and where it stands now."""

    state: str


class RedeemRequest(_Closed):
    """The executor presents a grant and the exact arguments it is about to use."""

    grant_id: str = _ID
    token: str = Field(min_length=1, max_length=1024)
    args: dict[str, JsonValue] = Field(default_factory=dict)


class RedeemAnswer(_Open):
    """A grant redeemed: the action may run, now, once."""


class OutcomeReport(_Closed):
    """What happened when the action ran."""

    decision_id: str = _ID
    success: bool
    error: str | None = Field(default=None, max_length=4096)
    duration_ms: float | None = Field(default=None, ge=0)
    result_digest: str | None = Field(default=None, max_length=256)


class OutcomeAnswer(_Open):
    """The outcome as recorded in the ledger."""


class LedgerEntryView(BaseModel):
    """One ledger entry with its hashes, so a client can check the chain itself."""

    seq: int
    kind: str
    at: str
    payload: dict[str, JsonValue]
    leaf_hash: str
    chain_hash: str


class LedgerPage(BaseModel):
    """Entries after a position; ask again with `after=next_after` for more."""

    entries: list[LedgerEntryView]
    next_after: int | None = Field(description="The `after` of the next page; null at the end.")


class VerifyAnswer(BaseModel):
    """The result of verifying the whole ledger's hash chain (and latest checkpoint)."""

    ok: bool
    count: int
    head: dict[str, JsonValue]
    problem: dict[str, JsonValue] | None
    checkpoint_size: int | None
    signature_checked: bool


class Demotion(_Open):
    """The autonomy controller's demotion of an agent still standing.

    Which rule, when, and the levels from and to (`autonomy_in_force` says the level now).
    """

    agent: str
    rule: str
    at: str
    from_: int = Field(alias="from")
    level: int


class AgentView(_Open):
    """An agent as decisions see it (the registry's entry, else the bundle's).

    `autonomy` is the profile's level; `autonomy_override` a level set at run time (by a
    person or a monitor) that takes precedence, and `autonomy_in_force` the one used.
    `demotion` names the autonomy rule when the controller set the level, else null.
    """

    id: str
    role: str
    owner: str
    model_id: str
    model_version: str
    autonomy: int
    autonomy_override: int | None
    autonomy_in_force: int | None
    source: Literal["registry", "bundle"]
    demotion: Demotion | None = None


class AgentPut(_Closed):
    """An agent's whole profile, registered or replaced; recorded in the ledger."""

    role: str = _ID
    owner: str = _ID
    model_id: str = _ID
    model_version: str = _ID
    autonomy: int = Field(ge=0, le=2**31 - 1)


class Status(BaseModel):
    """A health or readiness answer."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message, and the offending field if any.

    Some codes add a key: `too_many_pending` names the recorded `decision_id`.
    """

    model_config = ConfigDict(extra="allow")
    code: str
    message: str
    field: str | None
    decision_id: str | None = Field(
        None, description="With `too_many_pending`: the decision that was recorded and refused."
    )


class ErrorBody(BaseModel):
    """Every error answer has this shape."""

    error: ErrorDetail
