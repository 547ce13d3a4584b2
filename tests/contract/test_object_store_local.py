"""``LocalObjectStore`` (libcloud's LOCAL driver) passes the ObjectStore contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.storage import LocalObjectStore
from tests.contract.object_store_contract import ObjectStoreContract


class TestLocalObjectStore(ObjectStoreContract):
    __test__ = True

    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalObjectStore:
        return LocalObjectStore("vault", tmp_path / "vault")

    @pytest.fixture
    def prefix(self) -> str:
        return "group/"  # the LOCAL driver's first key segment is its container
