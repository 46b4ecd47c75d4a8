"""`context(...)`: what the agent says about its situation, carried to governed calls."""

from __future__ import annotations

import asyncio

import pytest
from _sdk import AGENT, RATIONALE, payloads

from charter import Charter
from charter.sdk import (
    ActionDenied,
    AsyncEmbeddedClient,
    EmbeddedClient,
    context,
    current_context,
    governed,
)


class TestContext:
    def test_is_empty_outside_any_block(self) -> None:
        """Outside every `context` block there is no context."""
        assert dict(current_context()) == {}

    def test_blocks_nest_and_inner_values_win(self) -> None:
        """An inner block adds to the outer one and overrides the fields it sets."""
        with context(confidence=0.5, environment="staging"):
            with context(confidence=0.9, rationale=RATIONALE):
                assert dict(current_context()) == {
                    "confidence": 0.9,
                    "environment": "staging",
                    "rationale": RATIONALE,
                }
            assert dict(current_context()) == {"confidence": 0.5, "environment": "staging"}
        assert dict(current_context()) == {}

    def test_is_sent_with_a_governed_call_over_the_decorator_context(
        self, charter: Charter
    ) -> None:
        """The block's context is merged over the decorator's and recorded with the decision."""
        sources = [{"name": "orders-db", "age_seconds": 30}]

        @governed(
            "payments.refund",
            client=EmbeddedClient(charter),
            agent=AGENT,
            context={"confidence": 0.5, "rationale": "the decorator's default reason"},
        )
        def refund(order_id: str, amount: float, currency: str) -> None:
            pass

        with context(confidence=0.95, data_sources=sources):
            refund("ord-1001", 40, "USD")

        sent = payloads(charter, "decision")[-1]["request"]["context"]
        assert sent == {
            "confidence": 0.95,
            "rationale": "the decorator's default reason",
            "data_sources": sources,
        }

    def test_decides_on_the_context(self, charter: Charter) -> None:
        """Context reaches the policy: stale order data makes the same refund a `deny`."""

        @governed("payments.refund", client=EmbeddedClient(charter), agent=AGENT)
        def refund(order_id: str, amount: float, currency: str) -> None:
            raise AssertionError("must not run")

        stale = [{"name": "orders-db", "age_seconds": 7200}]
        with (
            context(rationale=RATIONALE, data_sources=stale),
            pytest.raises(ActionDenied) as raised,
        ):
            refund("ord-1005", 30, "USD")

        assert raised.value.decision.decision.rules == ("no-refund-on-stale-orders",)

    def test_follows_each_asyncio_task_without_leaking(self, charter: Charter) -> None:
        """Concurrent tasks each send the context they were started in, not each other's."""
        client = AsyncEmbeddedClient(charter)

        @governed("payments.refund", client=client, agent=AGENT)
        async def refund(order_id: str, amount: float, currency: str) -> None:
            pass

        async def one(order_id: str, rationale: str) -> None:
            with context(rationale=rationale):
                await asyncio.sleep(0.01)  # let the other task set its own context meanwhile
                await refund(order_id, 40, "USD")

        async def both() -> None:
            await asyncio.gather(
                one("ord-1", "first task's reason, long enough"),
                one("ord-2", "second task's reason, long enough"),
            )

        asyncio.run(both())

        sent = {
            p["request"]["args"]["order_id"]: p["request"]["context"]["rationale"]
            for p in payloads(charter, "decision")
        }
        assert sent == {
            "ord-1": "first task's reason, long enough",
            "ord-2": "second task's reason, long enough",
        }

    def test_reaches_tasks_created_inside_the_block(self, charter: Charter) -> None:
        """A task created inside a block inherits its context after the block has ended."""
        client = AsyncEmbeddedClient(charter)

        @governed("payments.refund", client=client, agent=AGENT)
        async def refund(order_id: str, amount: float, currency: str) -> None:
            pass

        async def main() -> None:
            with context(rationale=RATIONALE, confidence=0.8):
                task = asyncio.create_task(refund("ord-1", 40, "USD"))
            await task

        asyncio.run(main())

        assert payloads(charter, "decision")[-1]["request"]["context"] == {
            "rationale": RATIONALE,
            "confidence": 0.8,
        }
