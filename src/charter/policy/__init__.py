"""Policy bundles: load and check them, compile them, and decide requests under them.

The flow is parse → check → compile → evaluate, each step in its own module; only
`decide` runs per request, and it is pure.
"""

from charter.policy._bundle import Bundle, bundle_from_content, load_bundle
from charter.policy._engine import decide, format_seconds
from charter.policy._redact import mask_value, redact_request
from charter.policy._scenarios import (
    DEFAULT_NOW,
    Scenario,
    ScenarioResult,
    SuiteReport,
    check_expectations,
    load_scenarios,
    run_scenarios,
)
from charter.policy._spec import WebhookSpec
from charter.policy._spec_breakers import BREAKER_EFFECTS, BreakerSpec
from charter.policy._spec_permissions import DEFAULT_PERMISSIONS, KEY_ROLES

__all__ = [
    "BREAKER_EFFECTS",
    "DEFAULT_NOW",
    "DEFAULT_PERMISSIONS",
    "KEY_ROLES",
    "BreakerSpec",
    "Bundle",
    "Scenario",
    "ScenarioResult",
    "SuiteReport",
    "WebhookSpec",
    "bundle_from_content",
    "check_expectations",
    "decide",
    "format_seconds",
    "load_bundle",
    "load_scenarios",
    "mask_value",
    "redact_request",
    "run_scenarios",
]
