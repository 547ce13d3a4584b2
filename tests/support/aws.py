"""An AWS account in moto, in this process, for unit tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
from moto import mock_aws

from providers.aws import AwsAccount


@contextmanager
def moto_account(monkeypatch: pytest.MonkeyPatch, regions: Sequence[str]) -> Iterator[AwsAccount]:
    """Fake credentials (never real ones, no profile) and an empty moto account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield AwsAccount(regions=regions)
