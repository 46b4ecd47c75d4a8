"""Traces off: the server's request path imports nothing of OpenTelemetry's SDK."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from charter.examples import EXAMPLE_POLICY

#: Serves one decision with a `traceparent` through an app built without telemetry, as
#: `charter serve` builds it without --otel, then says which modules were loaded.
UNTRACED = """
import json, sys
from starlette.testclient import TestClient
from charter import Charter
from charter.server import create_app
import charter.cli, charter.server._run  # the command line's path to the server, too

with Charter(sys.argv[1], sys.argv[2]) as charter:
    key = charter.create_key("agent", agent="support-bot")[1]
    with TestClient(create_app(charter)) as client:
        answer = client.post(
            "/v1/decisions",
            headers={
                "Authorization": f"Bearer {key}",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            },
            json={"agent": "support-bot", "action": "payments.refund",
                  "args": {"order_id": "ord-1", "amount": 40, "currency": "USD"}},
        )
    entry = next(charter.store.entries(kinds=("decision",)))
print(json.dumps({
    "status": answer.status_code,
    "traceresponse": answer.headers.get("traceresponse"),
    "recorded": entry.payload_object()["request"].get("trace_id"),
    "modules": sorted(sys.modules),
}))
"""

#: The OpenTelemetry modules FastAPI imports by itself (it depends on the API since 0.16x).
FASTAPI_ALONE = "import json, sys, fastapi; print(json.dumps(sorted(sys.modules)))"


def run(script: str, *args: str) -> dict[str, object] | list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, object] | list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


class TestTracesOff:
    """Without --otel the server does a header parse for the ledger, and nothing else."""

    def test_no_sdk_exporter_or_tracing_module_is_imported(self, tmp_path: Path) -> None:
        """Neither OpenTelemetry's SDK nor Charter's tracing or observing modules are loaded."""
        served = run(UNTRACED, str(EXAMPLE_POLICY), str(tmp_path / "c.db"))
        assert isinstance(served, dict)
        assert served["status"] == 200
        modules = served["modules"]
        assert isinstance(modules, list)
        ours = [
            m
            for m in modules
            if m.startswith(("charter.telemetry._tracing", "charter.server._observed"))
        ]
        sdk = [m for m in modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]
        assert ours == []
        assert sdk == []

    def test_opentelemetry_is_only_what_fastapi_imports_itself(self, tmp_path: Path) -> None:
        """Every `opentelemetry` module loaded is one `import fastapi` alone loads."""
        served = run(UNTRACED, str(EXAMPLE_POLICY), str(tmp_path / "c.db"))
        fastapi_alone = run(FASTAPI_ALONE)
        assert isinstance(served, dict)
        assert isinstance(fastapi_alone, list)
        modules = served["modules"]
        assert isinstance(modules, list)
        otel = {m for m in modules if m.startswith("opentelemetry")}
        assert otel <= {m for m in fastapi_alone if m.startswith("opentelemetry")}

    def test_the_ledger_still_records_the_trace(self, tmp_path: Path) -> None:
        """The traceparent's trace id is the request's `trace_id`, and named back."""
        served = run(UNTRACED, str(EXAMPLE_POLICY), str(tmp_path / "c.db"))
        assert isinstance(served, dict)
        assert served["recorded"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        traceresponse = served["traceresponse"]
        assert isinstance(traceresponse, str)
        assert traceresponse.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
