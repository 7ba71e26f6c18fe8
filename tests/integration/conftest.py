"""Fixtures shared by the integration modules that talk to the fake GCP APIs."""

from collections.abc import Iterator

import pytest

from tests.support.gcp import FakeGcp


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGcp]:
    """One FakeGcp per module; each module sets up its own project in it."""
    with FakeGcp() as server:
        yield server
