"""Who may call what: bearer keys, the role table, and agent binding.

Every route except `/healthz`, `/readyz` and `/metrics` needs `Authorization: Bearer
<secret>`. The gateway checks the secret against the stored hashes; this module decides
what the key's role may do. An `agent` key is bound to one agent and acts only as it.
"""

from __future__ import annotations

from collections.abc import Mapping

from charter.policy import DEFAULT_PERMISSIONS
from charter.server._errors import ApiError
from charter.service import Charter, Principal

__all__ = ["ROUTE_ROLES", "allowed_roles", "authorize", "bearer_secret", "require_agent"]

#: Which roles (`charter.service.ROLES`) may call each route, by operation id.
ROUTE_ROLES: Mapping[str, frozenset[str]] = {
    "create_decision": frozenset({"agent", "admin"}),
    "get_decision": frozenset({"agent", "reviewer", "admin", "auditor"}),
    "redeem_grant": frozenset({"agent", "admin"}),
    "record_outcome": frozenset({"agent", "admin"}),
    "list_ledger": frozenset({"auditor", "admin"}),
    "verify_ledger": frozenset({"auditor", "admin"}),
    "get_agent": frozenset({"agent", "reviewer", "policy-admin", "admin", "auditor"}),
    "put_agent": frozenset({"policy-admin", "admin"}),
    # approvals: reading is for reviewers and auditors; acting only for reviewers and
    # admins, and the gateway checks their groups against the approval's route
    "list_approvals": frozenset({"reviewer", "admin", "auditor"}),
    "get_approval": frozenset({"reviewer", "admin", "auditor"}),
    "similar_approvals": frozenset({"reviewer", "admin", "auditor"}),
    "approve_approval": frozenset({"reviewer", "admin"}),
    "deny_approval": frozenset({"reviewer", "admin"}),
    "modify_approval": frozenset({"reviewer", "admin"}),
    "claim_approval": frozenset({"reviewer", "admin"}),
    "batch_approvals": frozenset({"reviewer", "admin"}),
    # halts: who may halt and who may resume is the live bundle's `permissions`
    # (see `allowed_roles`); these are its defaults
    "list_halts": frozenset({"reviewer", "policy-admin", "admin", "auditor"}),
    "create_halt": DEFAULT_PERMISSIONS["halt"],
    "delete_halt": DEFAULT_PERMISSIONS["resume"],
    "list_breakers": frozenset({"reviewer", "policy-admin", "admin", "auditor"}),
    # monitors: figures are for whoever watches the fleet; accepting a proposal gives an
    # agent its autonomy back, declining it keeps the agent where it is
    "list_monitors": frozenset({"reviewer", "policy-admin", "admin", "auditor"}),
    "monitor_series": frozenset({"reviewer", "policy-admin", "admin", "auditor"}),
    "list_alerts": frozenset({"reviewer", "policy-admin", "admin", "auditor"}),
    "list_proposals": frozenset({"reviewer", "policy-admin", "admin", "auditor"}),
    "accept_proposal": DEFAULT_PERMISSIONS["promote"],
    "decline_proposal": DEFAULT_PERMISSIONS["promote"],
}

#: The operations whose roles the live bundle's `permissions` section sets.
_BUNDLE_PERMISSIONS = {
    "create_halt": "halt",
    "delete_halt": "resume",
    "accept_proposal": "promote",
    "decline_proposal": "promote",
}


def allowed_roles(charter: Charter, operation: str) -> frozenset[str]:
    """The key roles that may call `operation` under the live bundle."""
    granted = _BUNDLE_PERMISSIONS.get(operation)
    if granted is not None:
        return charter.bundle.may(granted)
    return ROUTE_ROLES[operation]


_NO_KEYS = (
    "no API keys exist yet: create the first one with "
    "`charter keys create --role admin --db PATH` and send it as `Authorization: Bearer <key>`"
)


def bearer_secret(header: str | None) -> str:
    """The secret of an `Authorization: Bearer <secret>` header.

    Raises:
        ApiError: `unauthenticated` when the header is missing or not a bearer token.
    """
    if not header:
        raise ApiError(
            "unauthenticated", "send an API key as `Authorization: Bearer <key>`", "Authorization"
        )
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise ApiError(
            "unauthenticated",
            "the `Authorization` header must be `Bearer <key>`",
            "Authorization",
        )
    return secret


def authorize(charter: Charter, header: str | None, operation: str) -> Principal:
    """Authenticate the caller and check its role may call `operation`.

    Blocking (the key is looked up in the store): call it from a worker thread.

    Raises:
        ApiError: `unauthenticated` (401) or `forbidden` (403).
    """
    secret = bearer_secret(header)
    principal = charter.authenticate(secret)
    if principal is None:
        message = "the API key is unknown or revoked"
        if not charter.has_keys():
            message = _NO_KEYS
        raise ApiError("unauthenticated", message, "Authorization")
    allowed = allowed_roles(charter, operation)
    if principal.role not in allowed:
        roles = ", ".join(sorted(allowed))
        raise ApiError(
            "forbidden", f"a `{principal.role}` key may not do this; it needs one of: {roles}"
        )
    return principal


def require_agent(principal: Principal, agent: object, field: str = "agent") -> None:
    """Refuse an `agent` key that names an agent other than its own.

    Keys of other roles may name any agent.

    Raises:
        ApiError: `agent_mismatch` (403).
    """
    if principal.role != "agent" or agent == principal.agent:
        return
    raise ApiError(
        "agent_mismatch",
        f"this key acts only as agent `{principal.agent}`, not `{agent}`",
        field,
    )
