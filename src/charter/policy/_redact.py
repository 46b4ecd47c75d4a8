"""Data rules: what the ledger keeps of personal data in a request.

The ledger is append-only, so personal data written to it can never be erased; data rules
make sure it is not written in the first place. A redacted field is listed beside the
request, so replay knows the value it sees is not the one that was decided on.
"""

from __future__ import annotations

import hashlib
from typing import Any

from charter.canonical import canonical_bytes
from charter.policy._bundle import Bundle

__all__ = ["mask_value", "redact_request"]


def mask_value(value: Any) -> str:
    """A masked form that keeps enough to recognise a value, not to recover it.

    Email addresses keep their first letter and domain; other text keeps its first and last
    character; everything else becomes `***`.
    """
    if isinstance(value, str):
        if "@" in value:
            local, _, domain = value.rpartition("@")
            return f"{local[:1]}***@{domain}"
        if len(value) <= 4:
            return "***"
        return f"{value[0]}***{value[-1]}"
    return "***"


def redact_request(
    request: dict[str, Any], bundle: Bundle
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Apply the bundle's data rules to a request's JSON form.

    Returns:
        The request as the ledger may store it, and the list of fields changed, each as
        `{"field": "args.email", "store": "hash"}`.
    """
    rules = bundle.data_rules_for(str(request.get("action", "")))
    if not rules:
        return request, []
    out = dict(request)
    changed: list[dict[str, str]] = []
    for rule in rules:
        # Copy only the objects on the way to the field: the caller's request stays as sent.
        parent: Any = out
        for key in rule.path[:-1]:
            child = parent.get(key) if isinstance(parent, dict) else None
            if isinstance(child, dict):
                child = dict(child)
                parent[key] = child
            parent = child
        leaf = rule.path[-1]
        if not isinstance(parent, dict) or leaf not in parent:
            continue
        if rule.store == "drop":
            del parent[leaf]
        elif rule.store == "hash":
            digest = hashlib.sha256(canonical_bytes(parent[leaf])).hexdigest()
            parent[leaf] = f"sha256:{digest}"
        else:
            parent[leaf] = mask_value(parent[leaf])
        changed.append({"field": ".".join(rule.path), "store": rule.store})
    return out, changed
