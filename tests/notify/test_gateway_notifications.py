"""The gateway and the notifier together: an opened approval reaches the route's webhook."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from _receiver import Receiver

from charter import Charter
from charter.examples import EXAMPLE_POLICY
from charter.service import WebhookNotifier, verify_signature

SECRET = "whsec-test-only"


def bundle_with_hook(tmp_path: Path, url: str) -> Path:
    folder = tmp_path / "policy"
    shutil.copytree(EXAMPLE_POLICY, folder)
    routes = folder / "routes.yaml"
    hook = (
        "    on_timeout: {route: finance-managers}\n"
        "    notify:\n"
        f"      - url: {url}\n"
        "        format: json\n"
        "        secret_env: CHARTER_TEST_HOOK_SECRET\n"
    )
    text = routes.read_text().replace("    on_timeout: {route: finance-managers}\n", hook)
    routes.write_text(text)
    return folder


def test_an_opened_approval_is_delivered_signed_and_recorded(
    tmp_path: Path, receiver: Receiver, store_target: str
) -> None:
    policy = bundle_with_hook(tmp_path, f"{receiver.url}/hooks/charter")
    with Charter(policy, store_target) as charter:
        notifier = WebhookNotifier(
            charter.webhooks,
            charter.record_event,
            base_url="https://charter.example.com",
            environ={"CHARTER_TEST_HOOK_SECRET": SECRET},
        )
        charter.notifier = notifier
        record = charter.decide(
            {
                "agent": "support-bot",
                "action": "payments.refund",
                "args": {
                    "order_id": "ord-1",
                    "amount": 2500,
                    "currency": "USD",
                    "customer_email": "ann@example.com",
                },
                "context": {"rationale": "the parcel never arrived"},
            }
        )
        [received] = receiver.wait_requests(1)
        assert notifier.close(timeout=5)
        body = json.loads(received.body)
        assert body["event"] == "approval.opened"
        assert body["approval"]["decision_id"] == record.id
        # the receiver is outside Charter: it gets the ledger's form of personal data
        assert body["approval"]["args"]["customer_email"].startswith("sha256:")
        assert verify_signature(
            SECRET, received.headers["x-charter-signature"], received.body, now=time.time()
        )
        deadline = time.monotonic() + 5
        kinds: list[str] = []
        while time.monotonic() < deadline and "approval.notified" not in kinds:
            kinds = [e.kind for e in charter.store.entries()]
            time.sleep(0.02)
        assert "approval.notified" in kinds
        assert charter.verify().ok


def test_a_failing_webhook_never_blocks_a_decision(tmp_path: Path, store_target: str) -> None:
    """A receiver that does not exist: the decision is answered at once anyway."""
    policy = bundle_with_hook(tmp_path, "http://127.0.0.1:9/unreachable")
    with Charter(policy, store_target) as charter:
        notifier = WebhookNotifier(
            charter.webhooks,
            charter.record_event,
            environ={"CHARTER_TEST_HOOK_SECRET": SECRET},
            sleep=lambda _seconds: None,
        )
        charter.notifier = notifier
        started = time.monotonic()
        record = charter.decide(
            {
                "agent": "support-bot",
                "action": "payments.refund",
                "args": {"order_id": "ord-2", "amount": 2500, "currency": "USD"},
            }
        )
        assert time.monotonic() - started < 1.0
        assert record.approval is not None
        notifier.close(timeout=0.1)  # retries pending: abandoned, not waited for
