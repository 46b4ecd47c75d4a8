"""A decision is a pure function of (request, bundle, state, clock), byte for byte.

Replay rests on this: the ledger stores the request, the state, the clock and the
bundle's canonical content, and re-deciding them must give the recorded bytes.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from charter.canonical import canonical_bytes
from charter.model import ActionRequest, AgentState, BudgetUsage, Halt
from charter.policy import bundle_from_content, decide, load_bundle

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy"
BUNDLE = load_bundle(EXAMPLE)
FRESH = load_bundle(EXAMPLE)
COLD = load_bundle(EXAMPLE)  # its plans forget what they decided before each example
REBUILT = bundle_from_content(json.loads(BUNDLE.canonical_content()))

ACTIONS = sorted({action for actions in BUNDLE.roles.values() for action in actions})
AGENTS = sorted(BUNDLE.agents)
BUDGETS = ["refunds-per-hour", "mails-per-hour"]

texts = st.text(alphabet="abcdefghijklmnop -_0123456789", max_size=24)
numbers = st.one_of(
    st.integers(min_value=-10, max_value=30000),
    st.floats(min_value=-10, max_value=30000, allow_nan=False, allow_infinity=False),
)
# Values each argument name may take, from valid to contract-breaking.
ARG_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "order_id": st.one_of(st.integers(0, 9999).map(lambda n: f"ord-{n}"), texts),
    "amount": numbers,
    "currency": st.sampled_from(["USD", "EUR", "GBP", "JPY"]),
    "reason": texts,
    "customer_email": st.sampled_from(["jane@customer.test", "x"]),
    "shipped": st.booleans(),
    "customer_id": texts,
    "text": texts,
    "service": texts,
    "replicas": st.one_of(st.integers(-1, 250), st.just(True)),
    "database": texts,
    "migration": texts,
    "destructive": st.booleans(),
    "to": st.sampled_from(["jane@customer.test", "sam@x.test"]),
    "subject": texts,
    "body": texts,
    "campaign": texts,
    "segment": texts,
    "recipients": st.integers(0, 20000),
}

contexts = st.fixed_dictionaries(
    {},
    optional={
        "confidence": st.floats(min_value=0, max_value=1, allow_nan=False),
        "environment": st.sampled_from(["prod", "staging", "dev"]),
        "rationale": texts,
        "alternatives": st.lists(texts, max_size=3),
        "data_sources": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["orders-db", "crm"])},
                optional={"age_seconds": st.integers(0, 10000)},
            ),
            max_size=3,
        ),
        "labels": st.dictionaries(
            st.sampled_from(["team", "urgent"]), st.one_of(texts, st.booleans()), max_size=2
        ),
    },
)


@st.composite
def requests(draw: st.DrawFn) -> ActionRequest:
    """Requests across every agent and action, valid or not."""
    names = draw(st.lists(st.sampled_from(sorted(ARG_VALUES)), max_size=6, unique=True))
    args = {name: draw(ARG_VALUES[name]) for name in names}
    return ActionRequest.from_json(
        {
            "agent": draw(st.sampled_from([*AGENTS, "intruder"])),
            "action": draw(st.sampled_from([*ACTIONS, "unknown.action"])),
            "args": args,
            "context": draw(contexts),
        }
    )


@st.composite
def states(draw: st.DrawFn) -> AgentState:
    """Agent states with overrides, budget usage and halts."""
    budgets = draw(
        st.dictionaries(
            st.sampled_from(BUDGETS),
            st.builds(BudgetUsage, st.integers(0, 300), st.integers(0, 1000)),
            max_size=2,
        )
    )
    halts = draw(
        st.lists(
            st.one_of(
                st.just(Halt("all")),
                st.sampled_from(AGENTS).map(lambda a: Halt("agent", a, "incident")),
                st.sampled_from(ACTIONS).map(lambda a: Halt("action", a)),
            ),
            max_size=1,
        )
    )
    autonomy = draw(st.one_of(st.none(), st.integers(0, 4)))
    return AgentState(autonomy=autonomy, budgets=budgets, halts=tuple(halts))


clocks = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(dt.UTC)
)


def decision_bytes(
    bundle: Any, request: ActionRequest, state: AgentState, now: dt.datetime
) -> bytes:
    """The canonical bytes of the decision, as the ledger would store them."""
    return canonical_bytes(decide(request, bundle, state, now).to_json())


class TestDeterminism:
    @settings(max_examples=300, deadline=None)
    @given(requests(), states(), clocks)
    def test_same_inputs_same_bytes(
        self, request: ActionRequest, state: AgentState, now: dt.datetime
    ) -> None:
        """Deciding the same inputs twice gives the same bytes."""
        assert decision_bytes(BUNDLE, request, state, now) == decision_bytes(
            BUNDLE, request, state, now
        )

    @settings(max_examples=300, deadline=None)
    @given(requests(), states(), clocks)
    def test_freshly_loaded_bundle_decides_alike(
        self, request: ActionRequest, state: AgentState, now: dt.datetime
    ) -> None:
        """Two loads of the same folder decide alike, byte for byte."""
        assert FRESH.version == BUNDLE.version
        assert decision_bytes(FRESH, request, state, now) == decision_bytes(
            BUNDLE, request, state, now
        )

    @settings(max_examples=300, deadline=None)
    @given(requests(), states(), clocks)
    def test_rebuilt_bundle_decides_alike(
        self, request: ActionRequest, state: AgentState, now: dt.datetime
    ) -> None:
        """A bundle rebuilt from its stored canonical content decides alike, byte for byte.

        BUG (for the lead, `_bundle.py`/`_engine.py`): fails on `outside_envelope` reasons,
        which list the role's actions in file order; the rebuilt bundle's envelope comes
        from canonical JSON, whose keys are sorted, so the message differs.
        """
        assert decision_bytes(REBUILT, request, state, now) == decision_bytes(
            BUNDLE, request, state, now
        )

    @settings(max_examples=300, deadline=None)
    @given(requests(), states(), clocks)
    def test_remembered_decision_is_the_combined_one(
        self, request: ActionRequest, state: AgentState, now: dt.datetime
    ) -> None:
        """A decision a plan remembers is the one combining the same inputs afresh gives."""
        for plan in (*COLD.plans.values(), *COLD.agent_plans.values()):
            plan.decided.clear()
        assert decision_bytes(COLD, request, state, now) == decision_bytes(
            BUNDLE, request, state, now
        )

    def test_rebuilt_bundle_has_the_same_version(self) -> None:
        """The version of a rebuilt bundle is the version of the bundle that was stored."""
        assert REBUILT.version == BUNDLE.version
        assert REBUILT.canonical_content() == BUNDLE.canonical_content()

    @settings(max_examples=300, deadline=None)
    @given(requests(), states(), clocks)
    def test_recorded_request_decides_alike(
        self, request: ActionRequest, state: AgentState, now: dt.datetime
    ) -> None:
        """A request read back from its canonical JSON, as replay reads it, decides alike."""
        recorded = ActionRequest.from_json(json.loads(canonical_bytes(request.to_json())))
        restored = AgentState.from_json(json.loads(canonical_bytes(state.to_json())))

        assert decision_bytes(BUNDLE, recorded, restored, now) == decision_bytes(
            BUNDLE, request, state, now
        )


POLICY = """\
roles:
  r:
    envelope:
      counter.bump:
        args: {type: object, properties: {n: {type: number}}}
agents:
  a: {role: r, autonomy: 1}
autonomy:
  levels: {0: 0, 1: 10}
  ceiling: 50
defaults: {route: review}
routes:
  review: {groups: [ops], sla: 1h}
rules:
  - id: big-bump
    effect: deny
    when: args.n + 1 > 5
    reason: bumps past 5 are refused
"""


class TestRecordedNumbers:
    def test_integral_float_decides_like_the_integer_the_ledger_keeps(self, tmp_path: Path) -> None:
        """`5.0` in a request decides like the `5` that the ledger stores for it.

        BUG (for the lead, `model.py`): canonical JSON writes `5.0` as `5`, so replay
        reads an integer where the live request held a float; CEL does not mix `double`
        and `int`, so `args.n + 1` errs (deny) live and evaluates (allow) on replay.
        `ActionRequest.from_json` should turn integral floats into integers, as
        `_source.py` does for policy files.
        """
        (tmp_path / "policy.yaml").write_text(POLICY, encoding="utf-8")
        bundle = load_bundle(tmp_path)
        now = dt.datetime(2026, 3, 4, tzinfo=dt.UTC)
        live = ActionRequest.from_json(
            json.loads('{"agent": "a", "action": "counter.bump", "args": {"n": 3.0}}')
        )
        recorded = ActionRequest.from_json(json.loads(canonical_bytes(live.to_json())))

        assert decision_bytes(bundle, recorded, AgentState(), now) == decision_bytes(
            bundle, live, AgentState(), now
        )


class TestClock:
    def test_same_instant_in_any_zone_decides_alike(self) -> None:
        """`now` is an instant: the same moment written with another UTC offset decides alike.

        BUG (for the lead, `_engine.py`): the datetime is passed to CEL as given, and CEL's
        `getDayOfWeek()`/`getHours()` read its own offset, so Friday 23:30 UTC written as
        Saturday 00:30+01:00 fires the example's `weekend-change` factor. Normalise `now`
        to UTC before evaluating (if the ledger records it in UTC, replay differs too).
        """
        request = ActionRequest.from_json(
            {
                "agent": "infra-bot",
                "action": "infra.restart",
                "args": {"service": "search"},
                "context": {"environment": "staging", "rationale": "memory leak after deploy"},
            }
        )
        utc = dt.datetime(2026, 3, 6, 23, 30, tzinfo=dt.UTC)  # a Friday
        paris = utc.astimezone(dt.timezone(dt.timedelta(hours=1)))  # Saturday 00:30

        assert decision_bytes(BUNDLE, request, AgentState(), paris) == decision_bytes(
            BUNDLE, request, AgentState(), utc
        )
