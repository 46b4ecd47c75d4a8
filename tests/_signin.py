"""Signing in to the reviewer UI through a TestClient, CSRF field and all."""

from __future__ import annotations

import re

from starlette.testclient import TestClient


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, secret: str, then: str = "/ui/") -> str:
    """Sign in and return the session's CSRF token, as the page `then` shows it."""
    form = client.get("/ui/signin")
    answer = client.post(
        "/ui/signin", data={"key": secret, "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get(then).text)
