"""A Dask LocalCluster of two worker processes on 127.0.0.1: a cluster of transfer machines."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Cluster:
    """The cluster, its scheduler's address and a client for tests to look at it."""

    cluster: Any
    address: str
    client: Any

    def worker_pids(self) -> list[int]:
        """The pid of each worker process (the nanny's child)."""
        pids = self.client.run(os.getpid)
        return sorted(int(pid) for pid in pids.values())

    def kill_a_worker(self) -> int:
        """SIGKILL one worker process (its nanny starts another); returns its pid."""
        pid = self.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        return pid


@contextmanager
def dask_cluster(
    workers: int = 2, threads: int = 4, streams: int = 2, allowed_failures: int | None = None
) -> Iterator[Cluster]:
    """Start ``workers`` worker processes (nannies restart a killed one) on 127.0.0.1.

    ``allowed_failures`` as a scheduler option; None keeps Dask's default (3):
    a cluster someone else runs, rerunning a lost worker's tasks by itself.
    """
    distributed = pytest.importorskip(
        "distributed", reason="the Dask executor's tests need it: pip install 'exitplan[dask]'"
    )
    scheduler_kwargs = {} if allowed_failures is None else {"allowed_failures": allowed_failures}
    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
        resources={"exitplan-stream": streams},
        scheduler_kwargs=scheduler_kwargs,
    )
    client = distributed.Client(cluster)
    try:
        yield Cluster(cluster, cluster.scheduler_address, client)
    finally:
        client.close()
        cluster.close()
