"""``DaskExecutor`` on a LocalCluster of two worker processes passes the executor contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.executor_contract import ExecutorContract
from tests.support.dask_cluster import Cluster, dask_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with dask_cluster(workers=2, threads=4) as running:
        yield running


class TestDaskExecutor(ExecutorContract):
    __test__ = True

    @pytest.fixture
    def executor(self, cluster: Cluster) -> Iterator[object]:
        from orchestrator.export.executors.dask_executor import DaskExecutor

        executor = DaskExecutor(scheduler=cluster.address, batch_items=4)
        yield executor
        executor.close()
