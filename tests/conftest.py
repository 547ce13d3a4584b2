"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.support.moto_server import moto_server

# Tests talk only to moto on 127.0.0.1: never let a real credential or profile
# on the machine reach a test, whatever the environment holds.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)

# The seeded sandbox is cached for this test session only (the first test that
# starts it seeds, every later one loads), never in the user's own cache.
_SANDBOX_CACHE = tempfile.mkdtemp(prefix="exitplan-test-sandbox-cache-")
os.environ.setdefault("EXITPLAN_CACHE_DIR", _SANDBOX_CACHE)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SANDBOX_CACHE, ignore_errors=True)


@pytest.fixture
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials moto accepts; never real ones, and no profile lookups."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server per test module, so one module's buckets never leak into another's export."""
    with moto_server() as url:
        yield url
