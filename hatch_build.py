"""Hatch build hook: a built wheel ships htmx for the reviewer UI.

htmx is fetched from the npm registry and checked against its pinned hash by
`scripts/fetch_htmx.py`; this hook runs that script when a wheel is built, and the
file is git-ignored, so it is declared an artifact (`[tool.hatch.build]` in pyproject).
An sdist carries the file when it was fetched before, and then nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class HtmxHook(BuildHookInterface):  # type: ignore[type-arg]
    """Fetch the pinned htmx into the UI's static folder before the wheel is built."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Run `scripts/fetch_htmx.py` (a no-op when the file is already current)."""
        if self.target_name != "wheel":
            return
        script = Path(self.root) / "scripts" / "fetch_htmx.py"
        if not script.is_file():  # building from an sdist: the file came with it
            return
        spec = importlib.util.spec_from_file_location("fetch_htmx", script)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load {script}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            module.fetch_htmx()
        except (SystemExit, OSError) as exc:
            # Only the reviewer UI's live updates need htmx (its pages work as plain forms
            # without it): an offline install must still give a working Charter. CI runs
            # the script itself, where a failure stops the run.
            print(f"warning: htmx for the reviewer UI was not fetched: {exc}", file=sys.stderr)
