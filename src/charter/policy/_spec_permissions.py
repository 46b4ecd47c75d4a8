"""The `permissions` section: which key roles may halt, resume and promote.

A halt stops agents at once; lifting one lets them act alone again, and so does
accepting the autonomy controller's proposal to give a demoted agent its level back
(`promote`). Who may do each is a policy choice, versioned with the rest of the bundle:
by default reviewers and admins may halt, only admins may resume, and policy admins and
admins may promote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from charter.policy._reader import Reader
from charter.policy._source import Node

__all__ = [
    "DEFAULT_PERMISSIONS",
    "KEY_ROLES",
    "PERMISSIONS",
    "PermissionsSpec",
    "parse_permissions",
]

#: The roles an API key may have (`charter.service.ROLES` describes each).
KEY_ROLES = ("agent", "reviewer", "policy-admin", "admin", "auditor")

#: The operations a bundle may grant, and who may do each when it says nothing.
DEFAULT_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "halt": frozenset({"reviewer", "admin"}),
    "resume": frozenset({"admin"}),
    "promote": frozenset({"policy-admin", "admin"}),
}
PERMISSIONS = tuple(DEFAULT_PERMISSIONS)


@dataclass(frozen=True, slots=True)
class PermissionsSpec:
    """The roles the bundle lets do each operation (the defaults where it is silent)."""

    roles: Mapping[str, frozenset[str]]
    node: Node


def parse_permissions(
    r: Reader, section: Node, seen: PermissionsSpec | None
) -> PermissionsSpec | None:
    """Check a `permissions` mapping; None when it is not one (the problem is reported)."""
    if not r.once(section, "permissions", seen is not None):
        return seen
    r.keys(section, PERMISSIONS, "`permissions`")
    roles = dict(DEFAULT_PERMISSIONS)
    for operation in PERMISSIONS:
        if operation not in section.value:
            continue
        what = f"`permissions.{operation}`"
        named = r.names(section, operation, what)
        unknown = [n for n in named if n not in KEY_ROLES]
        for name in unknown:
            r.add(
                section.child(operation),
                "unknown_role",
                f"{what} names `{name}`, which is no key role (roles: {', '.join(KEY_ROLES)})",
            )
        if not named and not unknown:
            r.add(section.child(operation), "type", f"{what} must name at least one key role")
        roles[operation] = frozenset(n for n in named if n in KEY_ROLES)
    return PermissionsSpec(roles, section)
