"""Fetch htmx for the reviewer UI from the npm registry, verified against a pinned hash.

The UI serves htmx from the package itself (the server runs offline), but htmx is not
written or copied into this repository: this script downloads the official `htmx.org`
tarball of the pinned version, checks it against the registry's SHA-512 integrity value
recorded below, and extracts `htmx.min.js` and its licence into the package's static
folder (git-ignored). `.ci/run` runs it before the tests; the hatch build hook
(`hatch_build.py`) runs it when a wheel is built, so a released wheel ships the file.

    python scripts/fetch_htmx.py          # idempotent: does nothing when the file is current

Stdlib only: it runs before any environment exists.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

__all__ = ["HTMX_INTEGRITY", "HTMX_VERSION", "TARGET", "fetch_htmx"]

#: The htmx release served: the 2.0 line (htmx 4 changed attributes and events).
HTMX_VERSION = "2.0.11"
#: `dist.integrity` of that tarball as the npm registry publishes it (SHA-512, base64).
HTMX_INTEGRITY = "sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA=="  # noqa: E501 - a hash does not wrap
_TARBALL = f"https://registry.npmjs.org/htmx.org/-/htmx.org-{HTMX_VERSION}.tgz"
#: Where the UI serves it from.
TARGET = Path(__file__).resolve().parent.parent / "src/charter/server/ui/static/vendor"
_MEMBERS = {"package/dist/htmx.min.js": "htmx.min.js", "package/LICENSE": "htmx.LICENSE"}
_STAMP = "htmx.version"


def _download(url: str, attempts: int = 3) -> bytes:
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310 - fixed https URL
                data: bytes = answer.read()
                return data
        except OSError as exc:  # a flaky network: try again, then give up loudly
            last = exc
    raise SystemExit(f"could not download {url}: {last}")


def fetch_htmx(target: Path = TARGET) -> Path:
    """Put the pinned htmx into `target` unless it is already there; returns the JS file.

    Raises:
        SystemExit: the download failed, or the tarball's hash is not the pinned one.
    """
    script = target / "htmx.min.js"
    stamp = target / _STAMP
    if script.is_file() and stamp.is_file() and stamp.read_text().strip() == HTMX_VERSION:
        return script
    data = _download(_TARBALL)
    algorithm, _, expected = HTMX_INTEGRITY.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise SystemExit(
            f"htmx.org-{HTMX_VERSION}.tgz does not match its pinned integrity hash; refusing it"
        )
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member, name in _MEMBERS.items():
            extracted = archive.extractfile(member)
            if extracted is None:
                raise SystemExit(f"htmx.org-{HTMX_VERSION}.tgz has no `{member}`")
            (target / name).write_bytes(extracted.read())
    stamp.write_text(HTMX_VERSION + "\n")
    return script


if __name__ == "__main__":
    print(fetch_htmx(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET))  # noqa: T201
