"""``LocalHost`` passes the Host contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.local import LocalHost
from tests.contract.host_contract import HostContract


class TestLocalHost(HostContract):
    __test__ = True

    @pytest.fixture
    def host(self) -> Iterator[LocalHost]:
        with LocalHost() as host:
            yield host
