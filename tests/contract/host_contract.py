"""The contract every ``Host`` provider passes.

A provider's test module subclasses ``HostContract`` and provides a ``host``
fixture; everything else runs unchanged. The suite assumes the host shares
this machine's network namespace (local, or sshd on 127.0.0.x): the facts test
listens on a port here and expects the host to see it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.interfaces.host import CommandFailed, CommandTimeout, Host, HostPathError

AWKWARD_ARGS = [
    "plain",
    "two words",
    "it's",
    'say "hi"',
    "$HOME",
    "${PATH}",
    "$(touch /tmp/exitplan-injected)",
    "`touch /tmp/exitplan-injected`",
    "a; touch /tmp/exitplan-injected",
    "a && b || c | d",
    "line one\nline two",
    "*",
    "~",
    "-n",
    "",
    "--",
    "> redirected",
    "#not-a-comment",
    "back\\slash",
    "tab\there",
    "ünïcödé ✓",
]


class HostContract:
    """Behaviour every ``Host`` implementation must show. Subclass and provide ``host``."""

    __test__ = False

    @pytest.fixture
    def host(self) -> Iterator[Host]:
        raise NotImplementedError("a HostContract subclass must provide the `host` fixture")

    @pytest.fixture
    def scratch(self, host: Host) -> Iterator[str]:
        """An empty directory on the host (its name has a space), removed afterwards."""
        base = host.run(["mktemp", "-d"], timeout=10).check().stdout.decode().strip()
        path = f"{base}/scratch dir"
        host.run(["mkdir", path], timeout=10).check()
        yield path
        host.run(["rm", "-rf", base], timeout=10)

    # -- run -----------------------------------------------------------------

    def test_argv_reaches_the_program_exactly(self, host: Host) -> None:
        result = host.run(["printf", "%s\\0", *AWKWARD_ARGS], timeout=10).check()
        assert result.stdout.split(b"\0")[:-1] == [arg.encode() for arg in AWKWARD_ARGS]
        assert host.run(["test", "-e", "/tmp/exitplan-injected"], timeout=10).exit_status == 1

    def test_result_records_argv_and_duration(self, host: Host) -> None:
        result = host.run(["sh", "-c", "sleep 0.2"], timeout=10)
        assert result.argv == ("sh", "-c", "sleep 0.2")
        assert result.exit_status == 0 and result.ok
        assert 0.2 <= result.duration_s < 5

    def test_exit_status_is_propagated_and_check_raises(self, host: Host) -> None:
        result = host.run(["sh", "-c", "echo partial; echo 'disk full' >&2; exit 7"], timeout=10)
        assert result.exit_status == 7
        assert result.stdout == b"partial\n"
        assert result.stderr == b"disk full\n"
        with pytest.raises(CommandFailed) as failed:
            result.check()
        message = str(failed.value)
        assert "sh -c" in message and "status 7" in message and "disk full" in message
        assert failed.value.result is result

    def test_missing_program_exits_127(self, host: Host) -> None:
        assert host.run(["exitplan-no-such-program"], timeout=10).exit_status == 127

    def test_a_shell_string_is_refused(self, host: Host) -> None:
        with pytest.raises(ValueError, match="not a shell command string"):
            host.run("echo hi", timeout=10)
        with pytest.raises(ValueError, match="empty"):
            host.run([], timeout=10)

    def test_input_is_fed_to_stdin(self, host: Host) -> None:
        # Larger than any SSH window or pipe buffer, so a deadlock would show.
        data = os.urandom(3 * 1024 * 1024 + 17)
        result = host.run(["cat"], input=data, timeout=30).check()
        assert result.stdout == data

    def test_stdin_is_empty_without_input(self, host: Host) -> None:
        assert host.run(["cat"], timeout=10).check().stdout == b""

    def test_large_stdout_and_stderr_together(self, host: Host) -> None:
        script = "head -c 2000000 /dev/zero; head -c 1500000 /dev/zero >&2; exit 3"
        result = host.run(["sh", "-c", script], timeout=30)
        assert (len(result.stdout), len(result.stderr), result.exit_status) == (2000000, 1500000, 3)

    def test_env_values_arrive_exactly(self, host: Host) -> None:
        value = "a b 'c' \"d\" $HOME ;e `f`\nnext line"
        result = host.run(
            ["sh", "-c", 'printf %s "$EXITPLAN_VALUE"; printf "|%s" "$EXITPLAN_OTHER"'],
            env={"EXITPLAN_VALUE": value, "EXITPLAN_OTHER": ""},
            timeout=10,
        ).check()
        assert result.stdout == (value + "|").encode()
        # The host's own environment is kept: PATH still finds programs.
        assert host.run(["sh", "-c", 'test -n "$PATH"'], env={"X": "1"}, timeout=10).ok

    def test_bad_env_name_is_refused(self, host: Host) -> None:
        with pytest.raises(ValueError, match="not a valid variable name"):
            host.run(["true"], env={"A=B": "x"}, timeout=10)

    def test_secrets_never_reach_error_messages(self, host: Host) -> None:
        secret = "hunter2-secret-value"
        result = host.run(
            ["sh", "-c", "cat >/dev/null; exit 4"],
            env={"EXITPLAN_TOKEN": secret},
            input=secret.encode(),
            timeout=10,
        )
        with pytest.raises(CommandFailed) as failed:
            result.check()
        assert secret not in str(failed.value)
        with pytest.raises(CommandTimeout) as timed_out:
            host.run(["sleep", "5"], env={"EXITPLAN_TOKEN": secret}, input=b"x", timeout=0.3)
        assert secret not in str(timed_out.value)

    def test_cwd(self, host: Host, scratch: str) -> None:
        awkward = f"{scratch}/it's a $dir; x"
        host.run(["mkdir", awkward], timeout=10).check()
        assert host.run(["pwd"], cwd=awkward, timeout=10).check().stdout.decode() == awkward + "\n"
        missing = host.run(["pwd"], cwd=f"{scratch}/missing", timeout=10)
        assert missing.exit_status != 0 and missing.stdout == b""

    def test_timeout_kills_the_command_and_its_children(self, host: Host) -> None:
        # "; true" makes sh fork sleep instead of exec'ing it: the kill must
        # reach the whole process group, not only the first process.
        duration = f"{60 + time.time() % 1:.6f}"
        started = time.monotonic()
        with pytest.raises(CommandTimeout, match=r"did not finish within 0\.5s"):
            host.run(["sh", "-c", f"sleep {duration}; true"], timeout=0.5)
        assert time.monotonic() - started < 3
        deadline = time.monotonic() + 5
        while host.run(["pgrep", "-f", f"sleep {duration}"], timeout=10).exit_status == 0:
            assert time.monotonic() < deadline, "the timed-out command is still running"
            time.sleep(0.05)

    def test_concurrent_runs_from_threads(self, host: Host) -> None:
        results: dict[int, bytes] = {}

        def worker(n: int) -> None:
            results[n] = host.run(["sh", "-c", f"sleep 0.1; echo {n}"], timeout=20).check().stdout

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {n: f"{n}\n".encode() for n in range(8)}

    # -- files ---------------------------------------------------------------

    def test_put_and_get_round_trip_byte_identical(
        self, host: Host, scratch: str, tmp_path: Path
    ) -> None:
        data = os.urandom(1024 * 1024)
        source = tmp_path / "source.bin"
        source.write_bytes(data)
        remote = f"{scratch}/copy of 'data'.bin"
        host.put_file(source, remote)
        back = tmp_path / "back.bin"
        host.get_file(remote, back)
        assert back.read_bytes() == data
        checksum = host.run(["sha256sum", remote], timeout=10).check().stdout.split()[0]
        assert checksum.decode() == hashlib.sha256(data).hexdigest()

    def test_put_is_atomic_sets_mode_and_replaces(self, host: Host, scratch: str) -> None:
        remote = f"{scratch}/config.env"
        host.put_bytes(b"old\n", remote, mode=0o644)
        host.put_bytes(b"SECRET=1\n", remote, mode=0o600)
        assert host.run(["cat", remote], timeout=10).check().stdout == b"SECRET=1\n"
        assert host.run(["stat", "-c", "%a", remote], timeout=10).check().stdout == b"600\n"
        listing = host.run(["ls", "-A", scratch], timeout=10).check().stdout
        assert listing == b"config.env\n", "a temporary file was left behind"

    def test_put_into_missing_directory_fails_cleanly(self, host: Host, scratch: str) -> None:
        with pytest.raises(HostPathError):
            host.put_bytes(b"x", f"{scratch}/missing/file")
        assert host.run(["ls", "-A", scratch], timeout=10).check().stdout == b""

    def test_get_missing_file_raises_and_writes_nothing(
        self, host: Host, scratch: str, tmp_path: Path
    ) -> None:
        local = tmp_path / "never"
        with pytest.raises(HostPathError):
            host.get_file(f"{scratch}/absent", local)
        assert list(tmp_path.iterdir()) == []

    def test_local_side_errors_stay_local_errors(
        self, host: Host, scratch: str, tmp_path: Path
    ) -> None:
        remote = f"{scratch}/file"
        with pytest.raises(FileNotFoundError):
            host.put_file(tmp_path / "no-such-local-file", remote)
        host.put_bytes(b"data", remote)
        with pytest.raises(FileNotFoundError):
            host.get_file(remote, tmp_path / "no-such-dir" / "file")

    def test_relative_host_paths_are_refused(self, host: Host, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="absolute"):
            host.put_bytes(b"x", "relative/file")
        with pytest.raises(ValueError, match="absolute"):
            host.get_file("relative/file", tmp_path / "x")

    # -- facts and lifecycle -------------------------------------------------

    def test_facts_are_plausible(self, host: Host, scratch: str) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            facts = host.facts(scratch)
        assert facts.hostname and facts.kernel and facts.os_id
        assert facts.cpu_count >= 1
        assert facts.mem_total_bytes >= facts.mem_available_bytes > 0
        assert facts.disk_free_bytes > 0
        assert port in facts.listening_ports
        expected_kernel = host.run(["uname", "-r"], timeout=10).check().stdout.decode().strip()
        assert facts.kernel == expected_kernel

    def test_facts_for_missing_path(self, host: Host, scratch: str) -> None:
        with pytest.raises(HostPathError, match="does not exist"):
            host.facts(f"{scratch}/missing")

    def test_close_is_idempotent_and_host_is_a_context_manager(self, host: Host) -> None:
        with host as same:
            assert same is host
            assert host.run(["true"], timeout=10).ok
        host.close()
        # Closing releases resources; a later call may reconnect.
        assert host.run(["echo", "again"], timeout=10).check().stdout == b"again\n"
