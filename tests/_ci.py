"""A tool a test needs is missing: skip on a workstation, fail in CI (`CI=true`).

CI must run every test, so there a missing browser or program is the machine's fault and
fails the run; elsewhere the test is skipped, saying what to install.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, why: str) -> NoReturn:
    """Skip the test for `what` is missing (say what to install); in CI, fail with `why`."""
    if in_ci():
        pytest.fail(f"{what} ({why})")
    pytest.skip(what)
