"""Outgoing approval webhooks, sent to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import email.utils
import itertools
import json
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _receiver import FakeTime, Receiver, Records, closed_port_url
from hypothesis import given
from hypothesis import strategies as st

from charter.policy import load_bundle
from charter.service._notify import (
    APPROVAL_ESCALATED,
    APPROVAL_OPENED,
    DELIVERED,
    FAILED,
    RetryPolicy,
    WebhookNotifier,
    sign,
    slack_message,
    verify_signature,
)

SECRET = "whsec-test-key"
START = 1_750_000_000  # FakeTime's start: 2025-06-15T15:06:40Z

APPROVAL: dict[str, Any] = {
    "id": "apr_1",
    "decision_id": "dec_1",
    "agent": "refund-bot",
    "action": "payments.refund",
    "kind": "approval",
    "state": "pending",
    "route": {"id": "finance-review", "groups": ["finance"], "approvals": 1},
    "risk": 35,
    "deadline": "2025-06-15T19:06:40.000000Z",
    "reasons": [{"code": "over_autonomy", "message": "risk 35 is over <level 1>'s 20"}],
    "args": {"amount": 120},
}


@dataclass(frozen=True)
class Hook:
    """A webhook as the notifier needs it; `charter.policy.WebhookSpec` has the same shape."""

    url: str
    format: str = "json"
    secret_env: str = "HOOK_KEY"


@pytest.fixture
def make(fake_time: FakeTime, records: Records) -> Iterator[Callable[..., WebhookNotifier]]:
    """Build notifiers on fake time with one worker (so attempts run in order); close them."""
    made: list[WebhookNotifier] = []

    def build(hooks: Mapping[str, list[Hook]], **options: Any) -> WebhookNotifier:
        counter = itertools.count(1)
        settings: dict[str, Any] = {
            "environ": {"HOOK_KEY": SECRET},
            "clock": fake_time.now,
            "monotonic": fake_time.monotonic,
            "sleep": fake_time.sleep,
            "random": lambda: 0.5,
            "workers": 1,
            "timeout": 2.0,
            "new_id": lambda: f"dlv_{next(counter)}",
        }
        settings.update(options)
        notifier = WebhookNotifier(lambda route: hooks.get(route, []), records, **settings)
        made.append(notifier)
        return notifier

    yield build
    for notifier in made:
        notifier.close(timeout=1)


def kinds(records: Records) -> list[tuple[str, int, str | int]]:
    """(kind, attempt, status or error) of every record, for compact expectations."""
    return [
        (kind, p["attempt"], p["status"] if kind == DELIVERED else p["error"])
        for kind, p in records.items
    ]


class TestSignature:
    def test_good_signature_verifies(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier]
    ) -> None:
        """The signature a receiver gets verifies against the raw body and the shared key."""
        notifier = make({"r": [Hook(receiver.url)]})

        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        (got,) = receiver.wait_requests(1)

        header = got.headers["x-charter-signature"]
        assert header.startswith(f"t={START},v1=")
        assert verify_signature(SECRET, header, got.body, now=START + 10)
        assert header == sign(SECRET, got.body, START)

    def test_tampered_body_fails(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier]
    ) -> None:
        """Changing one byte of the body breaks the signature."""
        make({"r": [Hook(receiver.url)]}).notify("r", APPROVAL_OPENED, APPROVAL)
        (got,) = receiver.wait_requests(1)

        tampered = got.body.replace(b'"risk":35', b'"risk":5')

        assert tampered != got.body
        assert not verify_signature(SECRET, got.headers["x-charter-signature"], tampered, START)

    def test_wrong_secret_fails(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier]
    ) -> None:
        """A receiver holding another key refuses the message."""
        make({"r": [Hook(receiver.url)]}).notify("r", APPROVAL_OPENED, APPROVAL)
        (got,) = receiver.wait_requests(1)

        assert not verify_signature("other", got.headers["x-charter-signature"], got.body, START)

    def test_stale_or_future_timestamp_fails(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier]
    ) -> None:
        """A signature older or newer than the tolerance is refused, so it cannot be replayed."""
        make({"r": [Hook(receiver.url)]}).notify("r", APPROVAL_OPENED, APPROVAL)
        (got,) = receiver.wait_requests(1)
        header = got.headers["x-charter-signature"]

        assert verify_signature(SECRET, header, got.body, now=START + 300)
        assert not verify_signature(SECRET, header, got.body, now=START + 301)
        assert not verify_signature(SECRET, header, got.body, now=START - 301)
        assert verify_signature(SECRET, header, got.body, now=START + 3000, tolerance=3600)

    @given(
        secret=st.text(min_size=1, max_size=40),
        body=st.binary(min_size=1, max_size=200),
        timestamp=st.integers(min_value=0, max_value=2**40),
        flip=st.integers(min_value=0),
    )
    def test_sign_and_verify_round_trip(
        self, secret: str, body: bytes, timestamp: int, flip: int
    ) -> None:
        """Any signed body verifies with its key and time; any changed byte does not."""
        header = sign(secret, body, timestamp)
        index = flip % len(body)
        changed = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]

        assert verify_signature(secret, header, body, now=timestamp)
        assert not verify_signature(secret, header, changed, now=timestamp)

    @pytest.mark.parametrize(
        "header",
        ["", "v1=abc", f"t={START}", f"t=soon,v1={'0' * 64}", f"t={START},v1={'0' * 64}"],
    )
    def test_malformed_header_fails(self, header: str) -> None:
        """A header without a timestamp, without a digest, or with a wrong one is refused."""
        assert not verify_signature(SECRET, header, b"{}", START)

    def test_any_of_several_digests_may_match(self) -> None:
        """Several `v1=` entries are accepted when one matches (room for key rotation)."""
        good = sign(SECRET, b"{}", START).split(",")[1]

        assert verify_signature(SECRET, f"t={START},v1={'0' * 64},{good}", "{}", START)


class TestFormats:
    def test_json_body_and_headers(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier]
    ) -> None:
        """The generic form carries event, route, approval, sent_at and the delivery id."""
        make({"finance-review": [Hook(receiver.url)]}).notify(
            "finance-review", APPROVAL_OPENED, APPROVAL
        )
        (got,) = receiver.wait_requests(1)

        assert json.loads(got.body) == {
            "event": "approval.opened",
            "route": "finance-review",
            "approval": APPROVAL,
            "sent_at": "2025-06-15T15:06:40.000000Z",
            "delivery_id": "dlv_1",
        }
        assert got.headers["content-type"] == "application/json"
        assert got.headers["x-charter-delivery"] == "dlv_1"
        assert got.headers["x-charter-event"] == "approval.opened"
        assert got.path == "/hook"

    def test_slack_message_names_what_a_reviewer_needs(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier]
    ) -> None:
        """A Slack message names agent, action, risk, route, deadline and links to the UI."""
        notifier = make(
            {"finance-review": [Hook(receiver.url, "slack")]},
            base_url="https://charter.example.com/",
        )

        notifier.notify("finance-review", APPROVAL_OPENED, APPROVAL)
        (got,) = receiver.wait_requests(1)
        message = json.loads(got.body)
        everything = json.dumps(message)

        assert set(message) == {"text", "blocks"}
        assert message["text"].startswith("Approval needed: payments.refund by refund-bot")
        for shown in ("refund-bot", "payments.refund", "35", "finance-review", "2025-06-15T19"):
            assert shown in everything
        assert "https://charter.example.com/ui/approvals/apr_1" in message["text"]
        assert "<https://charter.example.com/ui/approvals/apr_1|Open in Charter>" in everything
        assert verify_signature(SECRET, got.headers["x-charter-signature"], got.body, START)

    def test_slack_text_is_escaped(self) -> None:
        """`<`, `>` and `&` from the approval cannot turn into Slack links or mentions."""
        message = slack_message(APPROVAL_OPENED, "r", {**APPROVAL, "agent": "<!channel>&"})
        everything = json.dumps(message)

        assert "<!channel>" not in everything
        assert "&lt;!channel&gt;&amp;" in everything
        assert "&lt;level 1&gt;" in everything

    def test_slack_without_base_url_has_no_link(self) -> None:
        """Without a base URL there is nothing to link to, and no link is made up."""
        message = slack_message(APPROVAL_OPENED, "r", APPROVAL)

        assert "/ui/approvals/" not in json.dumps(message)

    def test_slack_escalation_says_where_it_went(self) -> None:
        """An escalated approval's message names the route it moved to."""
        message = slack_message(APPROVAL_ESCALATED, "finance-managers", APPROVAL)

        assert message["text"].startswith("Escalated to route finance-managers")

    def test_approval_is_copied_when_queued(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier], fake_time: FakeTime
    ) -> None:
        """What is sent is the approval as it was at `notify`, not as the caller changed it."""
        receiver.answer(503)
        approval = json.loads(json.dumps(APPROVAL))
        make({"r": [Hook(receiver.url)]}).notify("r", APPROVAL_OPENED, approval)
        receiver.wait_requests(1)

        approval["state"] = "approved"
        second = receiver.wait_requests(2)[1]

        assert json.loads(second.body)["approval"]["state"] == "pending"


class TestRetries:
    def test_retry_then_success(
        self,
        receiver: Receiver,
        make: Callable[..., WebhookNotifier],
        records: Records,
        fake_time: FakeTime,
    ) -> None:
        """Two 503s are retried after 1 s and 2 s; each attempt is recorded; then delivered."""
        receiver.answer(503, times=2)
        notifier = make({"finance-review": [Hook(receiver.url + "?token=abc")]})

        notifier.notify("finance-review", APPROVAL_OPENED, APPROVAL)
        assert notifier.close(timeout=5)

        assert fake_time.sleeps == [1.0, 2.0]
        assert kinds(records) == [
            (FAILED, 1, "http_status"),
            (FAILED, 2, "http_status"),
            (DELIVERED, 3, 200),
        ]
        first = records.items[0][1]
        assert first == {
            "delivery_id": "dlv_1",
            "route": "finance-review",
            "url": receiver.url,
            "format": "json",
            "event": "approval.opened",
            "approval_id": "apr_1",
            "attempt": 1,
            "error": "http_status",
            "detail": "the receiver answered 503",
            "status": 503,
            "final": False,
            "retry_in_ms": 1000,
        }
        got = receiver.wait_requests(3)
        assert {r.headers["x-charter-delivery"] for r in got} == {"dlv_1"}
        for request, at in zip(got, (START, START + 1, START + 3), strict=True):
            assert verify_signature(
                SECRET, request.headers["x-charter-signature"], request.body, at
            )
            assert request.headers["x-charter-signature"].startswith(f"t={at},")

    def test_no_retry_on_400(
        self,
        receiver: Receiver,
        make: Callable[..., WebhookNotifier],
        records: Records,
        fake_time: FakeTime,
    ) -> None:
        """A 400 says the request is wrong; sending it again would not help."""
        receiver.answer(400)
        notifier = make({"r": [Hook(receiver.url)]})

        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        assert notifier.close(timeout=5)

        assert kinds(records) == [(FAILED, 1, "http_status")]
        assert records.items[0][1]["final"] is True
        assert fake_time.sleeps == []
        assert len(receiver.requests) == 1

    def test_redirect_is_not_followed(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier], records: Records
    ) -> None:
        """A redirect could send a signed body elsewhere: it is a final failure."""
        receiver.answer(302, {"Location": "http://127.0.0.1:1/elsewhere"})
        notifier = make({"r": [Hook(receiver.url)]})

        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        assert notifier.close(timeout=5)

        assert kinds(records) == [(FAILED, 1, "http_status")]
        assert records.items[0][1]["status"] == 302

    def test_retry_after_seconds_is_honoured(
        self,
        receiver: Receiver,
        make: Callable[..., WebhookNotifier],
        records: Records,
        fake_time: FakeTime,
    ) -> None:
        """A 429 with `Retry-After: 7` waits 7 s, not the backoff's 1 s."""
        receiver.answer(429, {"Retry-After": "7"})
        notifier = make({"r": [Hook(receiver.url)]})

        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        assert notifier.close(timeout=5)

        assert fake_time.sleeps == [7.0]
        assert kinds(records) == [(FAILED, 1, "http_status"), (DELIVERED, 2, 200)]
        assert records.items[0][1]["retry_in_ms"] == 7000

    def test_retry_after_date_is_honoured(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier], fake_time: FakeTime
    ) -> None:
        """`Retry-After` may be an HTTP date; the wait runs to it on the notifier's clock."""
        later = email.utils.formatdate(START + 30, usegmt=True)
        receiver.answer(503, {"Retry-After": later})
        notifier = make({"r": [Hook(receiver.url)]})

        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        assert notifier.close(timeout=5)

        assert fake_time.sleeps == [30.0]

    def test_gives_up_after_max_attempts(
        self,
        receiver: Receiver,
        make: Callable[..., WebhookNotifier],
        records: Records,
        fake_time: FakeTime,
    ) -> None:
        """A receiver failing every attempt gets `max_attempts` tries; the last is final."""
        receiver.answer(500, times=10)
        notifier = make({"r": [Hook(receiver.url)]}, retry=RetryPolicy(max_attempts=3))

        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        assert notifier.close(timeout=5)

        assert [p["final"] for _, p in records.items] == [False, False, True]
        assert "retry_in_ms" not in records.items[-1][1]
        assert fake_time.sleeps == [1.0, 2.0]
        assert len(receiver.requests) == 3

    def test_backoff_doubles_with_jitter_and_a_cap(self) -> None:
        """Waits double from `first`, scaled by jitter in [0.5, 1.5), never above `most`."""
        policy = RetryPolicy(first=1.0, most=10.0)

        assert [policy.delay(n, 0.5) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
        assert policy.delay(3, 0.0) == 2.0
        assert policy.delay(3, 0.999) == pytest.approx(5.996)
        assert policy.delay(60, 0.5) == 10.0

    def test_retry_policy_refuses_nonsense(self) -> None:
        """Fewer than one attempt, or a negative wait, is a programming error."""
        with pytest.raises(ValueError, match="max_attempts"):
            RetryPolicy(max_attempts=0)
        with pytest.raises(ValueError, match="negative"):
            RetryPolicy(first=-1)


class TestFailuresNeverBlock:
    def test_unreachable_receiver_is_recorded(
        self, make: Callable[..., WebhookNotifier], records: Records, fake_time: FakeTime
    ) -> None:
        """A refused connection is retried, each attempt recorded as `connect_error`."""
        notifier = make({"r": [Hook(closed_port_url())]}, retry=RetryPolicy(max_attempts=2))

        started = time.perf_counter()
        assert notifier.notify("r", APPROVAL_OPENED, APPROVAL) == 1
        assert time.perf_counter() - started < 0.1
        assert notifier.close(timeout=5)

        assert kinds(records) == [(FAILED, 1, "connect_error"), (FAILED, 2, "connect_error")]
        assert records.items[-1][1]["final"] is True
        assert "status" not in records.items[-1][1]
        assert fake_time.sleeps == [1.0]

    def test_notify_returns_at_once_while_the_receiver_hangs(
        self, receiver: Receiver, records: Records
    ) -> None:
        """With the worker stuck on a hanging receiver, `notify` still returns immediately."""
        receiver.hang = True
        notifier = WebhookNotifier(
            lambda route: [Hook(receiver.url)],
            records,
            environ={"HOOK_KEY": SECRET},
            retry=RetryPolicy(max_attempts=1),
            timeout=0.3,
            workers=1,
        )
        try:
            notifier.notify("r", APPROVAL_OPENED, APPROVAL)
            receiver.wait_requests(1)

            took = []
            for _ in range(20):
                started = time.perf_counter()
                notifier.notify("r", APPROVAL_OPENED, APPROVAL)
                took.append(time.perf_counter() - started)

            assert max(took) < 0.1
            assert records.wait(1)[0][1]["error"] == "timeout"
            receiver.hang = False
            receiver.release.set()
            assert notifier.close(timeout=5)
        finally:
            notifier.close(timeout=1)

        assert kinds(records).count((DELIVERED, 1, 200)) == 20

    def test_one_hanging_receiver_does_not_hold_up_another(
        self, receiver: Receiver, records: Records
    ) -> None:
        """With two workers, a stalled receiver leaves the other worker free for others."""
        other = Receiver()
        receiver.hang = True
        hooks = {"slow": [Hook(receiver.url)], "fast": [Hook(other.url)]}
        notifier = WebhookNotifier(
            lambda route: hooks[route],
            records,
            environ={"HOOK_KEY": SECRET},
            retry=RetryPolicy(max_attempts=1),
            timeout=5,
            workers=2,
        )
        try:
            notifier.notify("slow", APPROVAL_OPENED, APPROVAL)
            receiver.wait_requests(1)
            notifier.notify("fast", APPROVAL_OPENED, APPROVAL)

            ((kind, payload),) = records.wait(1, timeout=2)

            assert (kind, payload["route"]) == (DELIVERED, "fast")
        finally:
            receiver.release.set()
            notifier.close(timeout=2)
            other.stop()

    def test_missing_secret_sends_nothing(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier], records: Records
    ) -> None:
        """Without the key in the environment nothing is sent, and the failure is recorded."""
        notifier = make({"r": [Hook(receiver.url, secret_env="UNSET_KEY")]})

        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        assert notifier.close(timeout=5)

        assert kinds(records) == [(FAILED, 1, "missing_secret")]
        assert records.items[0][1]["final"] is True
        assert "UNSET_KEY" in records.items[0][1]["detail"]
        assert receiver.requests == []

    def test_full_queue_drops_and_records(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier], records: Records
    ) -> None:
        """Past `queue_size` waiting deliveries, `notify` drops more and records why."""
        receiver.hang = True
        notifier = make({"r": [Hook(receiver.url)]}, queue_size=1)
        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        receiver.wait_requests(1)  # the worker holds the first; one more may wait

        assert notifier.notify("r", APPROVAL_OPENED, APPROVAL) == 1
        assert notifier.notify("r", APPROVAL_OPENED, {**APPROVAL, "id": "apr_3"}) == 0

        assert notifier.stats()["dropped"] == 1
        receiver.release.set()
        assert notifier.close(timeout=5)

        # The drop is written by the worker (never by the caller), once it is free again.
        dropped = [p for kind, p in records.items if kind == FAILED]
        assert [(p["error"], p["attempt"], p["approval_id"]) for p in dropped] == [
            ("queue_full", 0, "apr_3")
        ]
        assert kinds(records).count((DELIVERED, 1, 200)) == 2

    def test_broken_recorder_or_routes_never_reach_the_caller(
        self, receiver: Receiver, fake_time: FakeTime
    ) -> None:
        """A recorder or webhook lookup that raises is logged; `notify` neither raises nor stops."""

        def broken_record(kind: str, payload: dict[str, Any]) -> None:
            raise RuntimeError("ledger down")

        def lookup(route: str) -> list[Hook]:
            if route == "bad":
                raise KeyError(route)
            return [Hook(receiver.url)]

        notifier = WebhookNotifier(lookup, broken_record, environ={"HOOK_KEY": SECRET}, workers=1)

        assert notifier.notify("bad", APPROVAL_OPENED, APPROVAL) == 0
        assert notifier.notify("r", APPROVAL_OPENED, APPROVAL) == 1
        assert notifier.notify("r", APPROVAL_OPENED, APPROVAL) == 1
        assert notifier.close(timeout=5)
        assert len(receiver.requests) == 2
        assert notifier.stats()["delivered"] == 2

    def test_unsendable_approval_is_recorded(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier], records: Records
    ) -> None:
        """An approval that is not JSON (a NaN risk) is refused at `notify`, and recorded."""
        notifier = make({"r": [Hook(receiver.url)]})

        assert notifier.notify("r", APPROVAL_OPENED, {**APPROVAL, "risk": float("nan")}) == 0
        assert notifier.close(timeout=5)

        assert kinds(records) == [(FAILED, 0, "encode_error")]
        assert receiver.requests == []

    @pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "not a url"])
    def test_unusable_url_fails_without_retry(
        self,
        url: str,
        make: Callable[..., WebhookNotifier],
        records: Records,
        fake_time: FakeTime,
    ) -> None:
        """A webhook given in code with a URL that is not http(s) fails once, finally."""
        notifier = make({"r": [Hook(url)]})

        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        assert notifier.close(timeout=5)

        assert kinds(records) == [(FAILED, 1, "request_error")]
        assert records.items[0][1]["final"] is True
        assert fake_time.sleeps == []

    def test_route_without_webhooks_sends_nothing(
        self, make: Callable[..., WebhookNotifier], records: Records
    ) -> None:
        """A route with no `notify` list costs nothing and records nothing."""
        notifier = make({})

        assert notifier.notify("quiet", APPROVAL_OPENED, APPROVAL) == 0
        assert notifier.close(timeout=1)
        assert records.items == []


class TestClose:
    def test_close_abandons_a_retry_not_yet_due(self, receiver: Receiver, records: Records) -> None:
        """A retry due after the close deadline is given up and recorded as `closed`."""
        receiver.answer(503, {"Retry-After": "60"})
        notifier = WebhookNotifier(
            lambda route: [Hook(receiver.url)], records, environ={"HOOK_KEY": SECRET}
        )
        notifier.notify("r", APPROVAL_OPENED, APPROVAL)
        records.wait(1)

        started = time.perf_counter()
        assert notifier.close(timeout=0.2) is False
        assert time.perf_counter() - started < 2

        assert kinds(records) == [(FAILED, 1, "http_status"), (FAILED, 1, "closed")]
        assert records.items[-1][1]["final"] is True

    def test_notify_after_close_is_recorded_not_sent(
        self, receiver: Receiver, make: Callable[..., WebhookNotifier], records: Records
    ) -> None:
        """Once closed, a notification is refused and recorded as `closed`."""
        notifier = make({"r": [Hook(receiver.url)]})
        assert notifier.close(timeout=1)

        assert notifier.notify("r", APPROVAL_OPENED, APPROVAL) == 0
        assert kinds(records) == [(FAILED, 0, "closed")]
        assert receiver.requests == []

    def test_close_is_idempotent(self, make: Callable[..., WebhookNotifier]) -> None:
        """Closing twice is harmless."""
        notifier = make({})

        assert notifier.close(timeout=1)
        assert notifier.close(timeout=1)


class TestWithABundle:
    def test_bundle_webhooks_drive_the_notifier(
        self, receiver: Receiver, tmp_path: Path, records: Records, fake_time: FakeTime
    ) -> None:
        """A route's `notify` list from a bundle sends one delivery per webhook."""
        (tmp_path / "policy.yaml").write_text(
            textwrap.dedent(
                f"""\
                roles:
                  clerk: {{envelope: {{notes.add: {{}}}}}}
                autonomy: {{levels: {{0: 0}}, ceiling: 10}}
                defaults: {{route: review}}
                routes:
                  review:
                    groups: [ops]
                    sla: 1h
                    notify:
                      - {{url: '{receiver.url}?a=1', secret_env: HOOK_KEY}}
                      - {{url: '{receiver.url}?b=2', format: slack, secret_env: HOOK_KEY}}
                """
            ),
            encoding="utf-8",
        )
        bundle = load_bundle(tmp_path)
        notifier = WebhookNotifier(
            bundle.webhooks,
            records,
            environ={"HOOK_KEY": SECRET},
            clock=fake_time.now,
            workers=1,
        )

        assert notifier.notify("review", APPROVAL_OPENED, APPROVAL) == 2
        assert notifier.close(timeout=5)

        got = receiver.wait_requests(2)
        assert [r.path for r in got] == ["/hook?a=1", "/hook?b=2"]
        assert "blocks" in json.loads(got[1].body)
        assert [p["url"] for _, p in records.items] == [receiver.url, receiver.url]
        assert all(kind == DELIVERED for kind, _ in records.items)
