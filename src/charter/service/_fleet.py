"""The fleet's controls: the live bundle, the agent registry, autonomy overrides, halts.

Every change is an event committed first and folded into the session's state after
(`ServiceState.apply`), so the state a restart rebuilds from the ledger is the state the
running service had.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from charter.errors import RequestInvalid
from charter.ledger import LedgerEntry, NewEvent, events
from charter.model import AgentProfile, Halt
from charter.policy import Bundle
from charter.service._access import Principal
from charter.service._session import Session

__all__ = ["HALT_SCOPES", "Fleet"]

#: What a halt may cover: everything, or one agent, action or role (named by its target).
HALT_SCOPES = ("all", "agent", "action", "role")

_log = logging.getLogger("charter.service")


class Fleet:
    """Changes to what later decisions see, each recorded in the ledger."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def deploy(self, bundle: Bundle) -> None:
        """Make `bundle` live; recorded when its version differs from the deployed one.

        The caller holds the lock.
        """
        s = self._s
        s.store.put_bundle(bundle.version, bundle.canonical_content())
        s.bundle = bundle
        if s.state.deployed != bundle.version:
            s.record(
                events.policy_deployed(
                    s.stamp(), bundle.version, s.state.deployed, bundle.content["files"]
                )
            )

    def get_agent(self, agent_id: str) -> AgentProfile | None:
        """The agent as decisions see it: the registry's entry, else the bundle's."""
        return self._s.state.profile(agent_id, self._s.bundle.agents)

    def agents(self) -> list[AgentProfile]:
        """Every known agent, registry entries in place of the bundle's, by id."""
        merged = {**self._s.bundle.agents, **self._s.state.registry}
        return [merged[k] for k in sorted(merged)]

    def put_agent(self, profile: AgentProfile, *, by: str) -> AgentProfile:
        """Register or update an agent; recorded, and used by every later decision.

        Raises:
            RequestInvalid: the role or autonomy level is not defined by the live bundle.
        """
        bundle = self._s.bundle
        if not profile.id or len(profile.id) > 256:
            raise RequestInvalid("id", "an agent id is 1 to 256 characters")
        if profile.role not in bundle.roles:
            known = ", ".join(sorted(bundle.roles))
            raise RequestInvalid("role", f"role `{profile.role}` is not defined ({known})")
        if profile.autonomy not in bundle.levels:
            known = ", ".join(str(v) for v in bundle.levels)
            raise RequestInvalid(
                "autonomy", f"autonomy level {profile.autonomy} is not defined ({known})"
            )
        with self._s.lock:
            self._s.record(events.agent_updated(self._s.stamp(), profile.to_json(), by))
        return profile

    def set_autonomy(self, agent: str, level: int | None, *, reason: str, by: str) -> None:
        """Override an agent's autonomy level (None restores the bundle's); recorded.

        Raises:
            RequestInvalid: the agent or level is not defined in the live bundle.
        """
        if self.get_agent(agent) is None:
            raise RequestInvalid("agent", f"agent `{agent}` is not defined")
        if level is not None and level not in self._s.bundle.levels:
            known = ", ".join(str(v) for v in self._s.bundle.levels)
            raise RequestInvalid("level", f"autonomy level {level} is not defined ({known})")
        with self._s.lock:
            self._s.record(events.autonomy_changed(self._s.stamp(), agent, level, reason, by))

    def autonomy(self, agent: str) -> int | None:
        """The agent's autonomy level in force: an override, else the bundle's."""
        overrides = self._s.state.autonomy
        if agent in overrides:
            return overrides[agent]
        profile = self.get_agent(agent)
        return profile.autonomy if profile else None

    def halt(self, scope: str = "all", target: str | None = None, *, reason: str, by: str) -> None:
        """Stop every request that `scope`/`target` covers until `resume` is called.

        A role's halt covers the agents whose profile (the registry's, else the
        bundle's) has that role when they ask.
        """
        if scope not in HALT_SCOPES or (scope != "all") != (target is not None):
            raise RequestInvalid(
                "scope",
                "a halt covers `all`, or an `agent`, `action` or `role` named by `target`",
            )
        with self._s.lock:
            self._s.record(events.halt(self._s.stamp(), scope, target, reason, by))

    def resume(self, scope: str = "all", target: str | None = None, *, by: str) -> None:
        """Lift a halt; recorded in the ledger."""
        with self._s.lock:
            self._s.record(events.resume(self._s.stamp(), scope, target, by))

    @property
    def halts(self) -> tuple[Halt, ...]:
        """The halts in force."""
        return tuple(self._s.state.halts.values())

    def record_access_denied(self, /, principal: Principal, reason: str, **details: Any) -> None:
        """Record that a principal tried something its key does not allow."""
        event = events.access_denied(
            self._s.stamp(), principal.key_id, principal.role, principal.agent, reason, **details
        )
        self._s.writer.submit(event, None, awaited=True).result()

    def record_event(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Append an event to the ledger without waiting for it (webhook deliveries)."""
        future = self._s.writer.submit(NewEvent(kind, self._s.stamp(), dict(payload)))

        def failed(done: Future[LedgerEntry]) -> None:
            if done.exception() is not None:
                _log.error("recording %s failed: %s", kind, done.exception())

        future.add_done_callback(failed)
