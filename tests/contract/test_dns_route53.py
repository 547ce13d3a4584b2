"""``Route53DnsProvider`` (the old zone, over boto3) passes the DnsProvider contract on moto."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from providers.aws import AwsAccount
from providers.dns_route53 import Route53DnsProvider
from tests.contract.dns_contract import DnsContract
from tests.support.aws import moto_account


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsAccount]:
    with moto_account(monkeypatch, ["us-east-1"]) as account:
        yield account


class TestRoute53(DnsContract):
    __test__ = True

    @pytest.fixture
    def dns(self, aws: AwsAccount) -> Route53DnsProvider:
        return Route53DnsProvider("old", aws.client("route53"))

    @pytest.fixture
    def new_zone_name(self) -> str:
        return f"z{uuid.uuid4().hex[:10]}.exitplan.test."

    @pytest.fixture
    def zone(self, aws: AwsAccount, new_zone_name: str) -> str:
        aws.client("route53").create_hosted_zone(Name=new_zone_name, CallerReference=new_zone_name)
        return new_zone_name
