"""A real PostgreSQL cluster for tests: 127.0.0.1, a free port, scratch files only.

Built on :class:`orchestrator.postgres.LocalCluster` (which runs the server as
``postgres`` through ``runuser`` when the tests run as root). Import the
fixtures into a test module or conftest. Without the PostgreSQL binaries the
fixtures fail when ``CI`` is set and skip otherwise, saying what to install.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.postgres import LocalCluster, PgTools, find_pg_tools

INSTALL_HINT = (
    "install postgresql (apt-get install postgresql): initdb, pg_ctl, pg_dump, pg_restore, psql"
)
#: The superuser password of test clusters: distinctive, so leak checks can grep for it.
CANARY_PASSWORD = "canary-pgtest-Zq8Wd3Ny6Hs1"


def require_postgres() -> PgTools:
    """The PostgreSQL binaries (server tools included); fail in CI, skip elsewhere."""
    tools = find_pg_tools(server=True)
    if tools is None:
        message = f"PostgreSQL binaries not found: {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return tools


def start_cluster(
    parent: Path, *, superuser: str = "app_admin", password: str = CANARY_PASSWORD
) -> LocalCluster:
    """A started cluster under ``parent`` (or the system temp dir when root); caller stops it."""
    return LocalCluster(
        require_postgres(), superuser=superuser, password=password, parent_dir=parent
    ).start()


@pytest.fixture
def pg_tools() -> PgTools:
    return require_postgres()


@pytest.fixture
def postgres_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A running cluster for one test (superuser ``app_admin``, :data:`CANARY_PASSWORD`)."""
    cluster = start_cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def module_postgres_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One running cluster shared by a module's tests; they must use their own databases."""
    cluster = start_cluster(tmp_path_factory.mktemp("pg"))
    try:
        yield cluster
    finally:
        cluster.stop()
