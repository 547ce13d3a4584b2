"""A drill's ``ScratchStore`` over the LOCAL store passes the ObjectStore contract, and
keeps every key under its prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.drill.scratch import ScratchStore, delete_scratch, scratch_prefix
from providers.storage import LocalObjectStore
from tests.contract.object_store_contract import ObjectStoreContract


class TestScratchStore(ObjectStoreContract):
    __test__ = True

    @pytest.fixture
    def store(self, tmp_path: Path) -> ScratchStore:
        return ScratchStore(LocalObjectStore("vault", tmp_path / "vault"), scratch_prefix("R1"))

    @pytest.fixture
    def prefix(self) -> str:
        return "group/"


def test_a_drill_writes_only_under_its_prefix_and_cleans_it_up(tmp_path: Path) -> None:
    real = LocalObjectStore("vault", tmp_path / "vault")
    real.put_stream("s3/media/kept.jpg", [b"production"])
    drill = ScratchStore(real, scratch_prefix("20210110T120000Z-ab12"))
    drill.put_stream("s3/media/kept.jpg", [b"drill copy"])
    assert b"".join(real.get("s3/media/kept.jpg")) == b"production"
    assert b"".join(drill.get("s3/media/kept.jpg")) == b"drill copy"
    assert [o.key for o in drill.list()] == ["s3/media/kept.jpg"]
    deleted, stuck = delete_scratch(real, drill.prefix)
    assert (deleted, stuck) == (1, [])
    assert [o.key for o in real.list()] == ["s3/media/kept.jpg"]
