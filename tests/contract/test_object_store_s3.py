"""``S3CompatibleObjectStore`` (libcloud's MinIO driver) passes the ObjectStore
contract against a moto server on loopback, standing in for B2/Wasabi/Spaces."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest

from providers.storage import S3CompatibleObjectStore
from tests.contract.object_store_contract import ObjectStoreContract


class TestS3CompatibleObjectStore(ObjectStoreContract):
    __test__ = True

    @pytest.fixture
    def store(self, moto_endpoint: str) -> S3CompatibleObjectStore:
        endpoint = urlsplit(moto_endpoint)
        assert endpoint.hostname and endpoint.port
        return S3CompatibleObjectStore(
            "s3",
            host=endpoint.hostname,
            port=endpoint.port,
            secure=False,
            container=f"contract-{uuid.uuid4().hex[:12]}",  # a bucket per test
            key="testing",
            secret="testing",
        )

    @pytest.fixture
    def prefix(self) -> str:
        return "evacuated/"
