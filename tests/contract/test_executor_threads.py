"""``ThreadExecutor`` (threads of this process, the default) passes the executor contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.export.executors.threads import ThreadExecutor
from tests.contract.executor_contract import ExecutorContract


class TestThreadExecutor(ExecutorContract):
    __test__ = True

    @pytest.fixture
    def executor(self) -> Iterator[ThreadExecutor]:
        executor = ThreadExecutor(4)
        yield executor
        executor.close()
