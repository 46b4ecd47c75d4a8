"""Fixtures for webhook notifications: a live receiver, fake time, recorded attempts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _receiver import FakeTime, Receiver, Records


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def records() -> Records:
    return Records()
