"""Fixtures for unit tests: fake AWS credentials and the seeded sandbox account.

The sandbox is module-scoped, not session-scoped: while it is up, moto's
``mock_aws`` is active for the whole process, and a test in another module
that starts its own ``mock_aws`` would then share (and see) the sandbox's
state instead of an empty account. Tests using it must treat it as read-only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.sandbox.account import SANDBOX_REGION, Sandbox, running_sandbox
from providers.aws import AwsAccount


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials and region in the environment, and no profile."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SECURITY_TOKEN",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", SANDBOX_REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The seeded microblog account and its SeedSummary (read-only, shared in a module)."""
    with running_sandbox() as running:
        yield running


@pytest.fixture(scope="module")
def sandbox_account(sandbox: Sandbox) -> AwsAccount:
    """The seeded microblog AwsAccount inside moto's mock_aws (read-only)."""
    return sandbox.account
