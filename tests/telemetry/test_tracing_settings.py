"""When traces are on, where they go, and what is said when the extra is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from charter.errors import CharterError
from charter.examples import EXAMPLE_POLICY
from charter.telemetry import MISSING_EXTRA, TracingSettings
from charter.telemetry._tracing import DroppingExporter, Tracing


class TestResolve:
    """`--otel`, `--no-otel` and the standard OTEL_* variables decide, in that order."""

    def test_off_by_default(self) -> None:
        """No flag and no variable: no traces."""
        assert TracingSettings.resolve(None, {}) is None

    def test_the_flag_turns_them_on(self) -> None:
        """`--otel` alone: OTLP, service `charter`."""
        assert TracingSettings.resolve(True, {}) == TracingSettings("charter", ("otlp",))

    @pytest.mark.parametrize(
        "environ",
        [
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
            {"OTEL_TRACES_EXPORTER": "otlp"},
            {"OTEL_TRACES_EXPORTER": "console"},
        ],
    )
    def test_the_standard_variables_turn_them_on(self, environ: dict[str, str]) -> None:
        """An OTLP endpoint, or an exporter named: on, as OpenTelemetry's own setup reads it."""
        assert TracingSettings.resolve(None, environ) is not None

    def test_the_service_name_is_read(self) -> None:
        """`OTEL_SERVICE_NAME` names the service; `charter` when unset."""
        settings = TracingSettings.resolve(True, {"OTEL_SERVICE_NAME": "charter-eu"})
        assert settings is not None
        assert settings.service_name == "charter-eu"

    def test_exporters_are_a_list(self) -> None:
        """`otlp,console` sends spans to both."""
        settings = TracingSettings.resolve(None, {"OTEL_TRACES_EXPORTER": "otlp, console"})
        assert settings is not None
        assert settings.exporters == ("otlp", "console")

    def test_none_alone_is_off_unless_asked(self) -> None:
        """`OTEL_TRACES_EXPORTER=none` is off; with `--otel` spans are built and dropped."""
        assert TracingSettings.resolve(None, {"OTEL_TRACES_EXPORTER": "none"}) is None
        dropped = TracingSettings.resolve(True, {"OTEL_TRACES_EXPORTER": "none"})
        assert dropped == TracingSettings("charter", ("none",))

    def test_no_otel_wins_over_the_environment(self) -> None:
        """`--no-otel` keeps them off whatever the variables say."""
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
        assert TracingSettings.resolve(False, environ) is None

    def test_sdk_disabled_is_respected(self) -> None:
        """`OTEL_SDK_DISABLED=true` turns the variables' traces off (not an explicit flag)."""
        environ = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}
        assert TracingSettings.resolve(None, environ) is None

    def test_an_unknown_exporter_is_refused(self) -> None:
        """An exporter Charter does not ship is an error naming it, not silence."""
        with pytest.raises(CharterError, match="`zipkin`") as raised:
            TracingSettings.resolve(True, {"OTEL_TRACES_EXPORTER": "zipkin"})
        assert raised.value.code == "telemetry_invalid"


class TestTracing:
    """The provider `charter serve` builds."""

    def test_none_drops_behind_a_batch(self) -> None:
        """`none` still batches every span (so its cost is measured), then drops it."""
        tracing = Tracing.from_settings(TracingSettings(exporters=("none",)))
        try:
            processors = tracing.provider._active_span_processor._span_processors
            assert [type(p).__name__ for p in processors] == ["BatchSpanProcessor"]
            assert isinstance(processors[0]._batch_processor._exporter, DroppingExporter)
        finally:
            tracing.shutdown()

    def test_the_resource_names_charter(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`service.name` is `charter` unless OTEL_SERVICE_NAME says otherwise."""
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        tracing = Tracing.create()
        assert tracing.provider.resource.attributes["service.name"] == "charter"
        monkeypatch.setenv("OTEL_SERVICE_NAME", "charter-eu")
        assert Tracing.create().provider.resource.attributes["service.name"] == "charter-eu"


#: Runs `charter serve --otel` in an interpreter where OpenTelemetry's SDK cannot be found.
NO_SDK = """
import sys
from pathlib import Path
sys.modules["opentelemetry.sdk"] = None  # as if the `otel` extra were not installed
from charter.cli import main
sys.argv = ["charter", "serve", "--otel", "--policy", sys.argv[1], "--db", sys.argv[2]]
main()
"""


class TestMissingExtra:
    """Traces asked for without the `otel` extra: one line naming it, exit 2, nothing made."""

    def test_serve_says_how_to_install_it(self, tmp_path: Path) -> None:
        """`charter serve --otel`: the message names `pip install 'charter-governance[otel]'`."""
        db = tmp_path / "c.db"
        done = subprocess.run(
            [sys.executable, "-c", NO_SDK, str(EXAMPLE_POLICY), str(db)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "pip install 'charter-governance[otel]'" in done.stderr
        assert not db.exists()

    def test_the_message_names_the_extra(self) -> None:
        """The constant the error is built from says which extra and how."""
        assert "charter-governance[otel]" in MISSING_EXTRA
