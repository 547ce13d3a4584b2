"""Benchmark: copy an S3 bucket to a local directory with exitplan and with the usual tools.

The source is an S3 server on 127.0.0.1 (a moto server in this process, or
s3rver under Node.js) seeded with deterministic content:

  W1  many small objects (default 2,000 of 4 to 64 KiB)
  W2  a few large objects (default 8 of 64 MiB)

Every tool runs as a subprocess, so all are measured the same way, start-up
included: wall time around the child, and its CPU time and peak RSS from
``os.wait4``. The tools are

  exitplan   ``exitplan export --config bench.yaml`` (a local destination)
  rclone     ``rclone copy`` with default flags
  rclone-16  ``rclone copy --transfers 16 --checkers 16``
  aws-cli    ``aws s3 cp --recursive``
  boto3-32   a plain 32-thread GET loop (this file's ``boto3-get`` command): about
             the most the source can serve

Runs are interleaved round-robin across tools, each into a fresh empty
directory, and every copy is checked file by file (count, and the sha256 of
every file against the seeded content); exit codes are recorded, not trusted.
Besides the rounds, the benchmark measures a no-op re-run over a finished copy
(exitplan and rclone) and a resume: the copy of W1+W2 is killed with SIGKILL
at about half of its bytes, then carried on, and the bytes transferred again
are reported. Results go to a Markdown file (``bench/RESULTS.md`` by default).

Run ``python bench/s3_export.py --help``; ``--quick`` is a smoke run of well
under a minute. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_WORK_DIR = BENCH_DIR / ".work"
DEFAULT_RESULTS = BENCH_DIR / "RESULTS.md"
NODE_PREFIX = BENCH_DIR / ".node"
S3RVER_BIN = NODE_PREFIX / "node_modules" / ".bin" / "s3rver"

REGION = "us-east-1"
KIB = 1024
MIB = 1024 * KIB
#: Throughput is reported in decimal units (MB/s, GB), like rclone and the AWS CLI.
MB = 1000**2
GB = 1000**3

TOOLS = ("exitplan", "rclone", "rclone-16", "aws-cli", "boto3-32")
#: exitplan on a local Dask cluster of 1 or 2 worker processes (``--workers N``);
#: accepted by ``--tools``, not run by default (``bench/dask_export.py`` runs them).
DASK_TOOLS = ("exitplan-dask1", "exitplan-dask2")
#: exitplan from another checkout (``--before DIR``), for a same-run comparison.
BEFORE_TOOL = "exitplan-before"
#: The tools whose no-op re-run and resume are measured.
RERUN_TOOLS = ("exitplan", "rclone")
BOTO3_THREADS = 32


# -- the source servers ------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class Source:
    """An S3 endpoint on loopback with the credentials it accepts."""

    server: str  # "moto" | "s3rver"
    endpoint: str
    credentials: Credentials

    def client(self, max_pool_connections: int = 10) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.credentials.access_key,
            aws_secret_access_key=self.credentials.secret_key,
            # Path style: virtual-host style would look up bucket.127.0.0.1 in DNS.
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                max_pool_connections=max_pool_connections,
                retries={"mode": "standard", "max_attempts": 5},
            ),
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    """Return once 127.0.0.1:port accepts connections; raise if ``process`` dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


@contextmanager
def moto_source() -> Iterator[Source]:
    """A moto server in this process, on 127.0.0.1 only."""
    from moto.server import ThreadedMotoServer

    # A log line per request would cost the server CPU the tools compete for.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield Source("moto", f"http://127.0.0.1:{port}", Credentials("testing", "testing"))
    finally:
        server.stop()


def s3rver_env() -> dict[str, str]:
    # Listings of over 1,000 keys fail on Node 17+ without the legacy provider.
    return {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}


def ensure_s3rver() -> None:
    """Install s3rver into bench/.node with the machine's npm, once."""
    if S3RVER_BIN.exists():
        return
    if shutil.which("npm") is None:
        raise SystemExit("--server s3rver needs Node.js and npm: apt-get install nodejs npm")
    log(f"installing s3rver into {NODE_PREFIX}")
    subprocess.run(["npm", "install", "--prefix", str(NODE_PREFIX), "s3rver"], check=True)


@contextmanager
def s3rver_source(work_dir: Path) -> Iterator[Source]:
    """s3rver (Node.js) on 127.0.0.1, keeping its objects under ``work_dir``."""
    ensure_s3rver()
    data = work_dir / "s3rver-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    port = free_port()
    argv = [str(S3RVER_BIN), "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--silent"]
    with (work_dir / "s3rver.log").open("wb") as out:
        process = subprocess.Popen(argv, env=s3rver_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 30.0, process)
        yield Source("s3rver", f"http://127.0.0.1:{port}", Credentials("S3RVER", "S3RVER"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def open_source(server: str, work_dir: Path) -> Iterator[Source]:
    if server == "moto":
        with moto_source() as source:
            yield source
    else:
        with s3rver_source(work_dir) as source:
            yield source


# -- workloads: deterministic content, seeded and remembered by checksum ----


@dataclass(frozen=True)
class SeedObject:
    key: str
    size: int


@dataclass(frozen=True)
class Expected:
    size: int
    sha256: str


@dataclass(frozen=True)
class Workload:
    """A bucket's worth of objects; ``name`` is W1, W2 or W1+W2."""

    name: str
    bucket: str
    objects: tuple[SeedObject, ...]

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def describe(self) -> str:
        sizes = [o.size for o in self.objects]
        low, high = min(sizes), max(sizes)
        each = binary_size(low) if low == high else f"{binary_size(low)} to {binary_size(high)}"
        return f"{len(sizes)} objects of {each}, {self.total_bytes / MIB:.1f} MiB in all"


def binary_size(n: int) -> str:
    """``n`` bytes in whole KiB, or MiB from 1 MiB on."""
    return f"{n / MIB:.0f} MiB" if n >= MIB else f"{n / KIB:.0f} KiB"


def small_objects(count: int, min_kib: int, max_kib: int, seed: int) -> list[SeedObject]:
    rng = random.Random(f"{seed}:w1-sizes")
    return [
        SeedObject(
            f"w1/{i // 100:03d}/object-{i:05d}.bin", rng.randint(min_kib * KIB, max_kib * KIB)
        )
        for i in range(count)
    ]


def large_objects(count: int, mib: int) -> list[SeedObject]:
    return [SeedObject(f"w2/large-{i:03d}.bin", mib * MIB) for i in range(count)]


def content(seed: int, obj: SeedObject) -> bytes:
    """The bytes of ``obj``: pseudo-random (incompressible), the same on every run."""
    return random.Random(f"{seed}:{obj.key}").randbytes(obj.size)


def empty_account(source: Source) -> None:
    """Delete every object and bucket, so an exporter of the whole account sees one bucket."""
    client = source.client()
    for bucket in client.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)


def seed_workload(source: Source, workload: Workload, seed: int) -> dict[str, Expected]:
    """Empty the account, upload ``workload`` and return each key's size and sha256."""
    empty_account(source)
    client = source.client(max_pool_connections=8)
    client.create_bucket(Bucket=workload.bucket)

    def put(obj: SeedObject) -> tuple[str, Expected]:
        body = content(seed, obj)
        client.put_object(Bucket=workload.bucket, Key=obj.key, Body=body)
        return obj.key, Expected(obj.size, hashlib.sha256(body).hexdigest())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        expected = dict(pool.map(put, workload.objects))
    listed = sum(
        len(page.get("Contents", []))
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=workload.bucket)
    )
    if listed != len(workload.objects):
        raise RuntimeError(f"seeded {len(workload.objects)} objects but the source lists {listed}")
    return expected


# -- checking a copy ---------------------------------------------------------


@dataclass
class Verification:
    """What a destination holds compared with the seeded content."""

    files: int = 0
    bytes: int = 0
    #: Files whose name, size and sha256 match the seeded object.
    good_files: int = 0
    good_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_copy(root: Path, expected: Mapping[str, Expected]) -> Verification:
    """Compare every file under ``root`` with ``expected`` (relative path -> content)."""
    result = Verification()
    seen: set[str] = set()
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            key = path.relative_to(root).as_posix()
            size = path.stat().st_size
            result.files += 1
            result.bytes += size
            want = expected.get(key)
            if want is None:
                result.problems.append(f"unexpected file {key}")
                continue
            seen.add(key)
            with path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            if size != want.size or digest != want.sha256:
                result.problems.append(f"{key}: {size} bytes, sha256 {digest[:12]}... differs")
                continue
            result.good_files += 1
            result.good_bytes += size
    missing = sorted(set(expected) - seen)
    if missing:
        result.problems.append(f"{len(missing)} missing, e.g. {missing[0]}")
    return result


def bytes_on_disk(root: Path) -> int:
    """Bytes written to files under ``root``, tolerating files renamed or removed meanwhile.

    A file counts with its size or its allocated blocks, whichever is less:
    staging files may be sparse (exitplan sizes a ranged download's file
    first and fills it in parts), and their holes hold nothing yet.
    """
    total = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    total += min(stat.st_size, stat.st_blocks * 512)
            except FileNotFoundError:
                continue
    return total


# -- running a measured child ------------------------------------------------


@dataclass(frozen=True)
class ChildResult:
    """A finished child: wall time, and its CPU and peak RSS from wait4."""

    exit_code: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kib: int
    #: Whether the child was killed on purpose (``kill_when``).
    killed: bool = False

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


#: Starts one tool and reports its pid, then its exit status, wall time and
#: rusage, as JSON lines. It runs as ``python -S -c`` with nothing but os, sys,
#: json and time loaded: on Linux a child's ru_maxrss includes the RSS of the
#: process it was forked from, so spawning a tool straight from this process
#: (which holds the moto server and its objects) would report our RSS as the
#: tool's. From this launcher the floor is its own RSS, about 10 MiB.
_LAUNCHER = """
import json, os, sys, time
spec = json.loads(sys.stdin.read())
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
out = os.open(spec["stdout"], flags, 0o644)
err = os.open(spec["stderr"], flags, 0o644)
devnull = os.open(os.devnull, os.O_RDONLY)
os.chdir(spec["cwd"])
started = time.monotonic()
pid = os.posix_spawnp(spec["argv"][0], spec["argv"], spec["env"], file_actions=[
    (os.POSIX_SPAWN_DUP2, devnull, 0),
    (os.POSIX_SPAWN_DUP2, out, 1),
    (os.POSIX_SPAWN_DUP2, err, 2),
])
print(pid, flush=True)
_, status, usage = os.wait4(pid, 0)
print(json.dumps({
    "exit_code": os.waitstatus_to_exitcode(status),
    "wall_s": time.monotonic() - started,
    "user_s": usage.ru_utime,
    "sys_s": usage.ru_stime,
    "max_rss_kib": usage.ru_maxrss,
}), flush=True)
"""


def run_child(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_dir: Path,
    kill_when: Callable[[], bool] | None = None,
) -> ChildResult:
    """Run ``argv`` with its output in ``log_dir``, measured with ``os.wait4``.

    The tool is started by a small launcher process (see ``_LAUNCHER``) so
    that its peak RSS is its own. ``kill_when`` is polled every 20 ms while
    the tool runs; once it returns True the tool gets SIGKILL.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": list(argv),
        "env": dict(env),
        "cwd": str(REPO_ROOT),
        "stdout": str(log_dir / "stdout"),
        "stderr": str(log_dir / "stderr"),
    }
    launcher = subprocess.Popen(
        [sys.executable, "-S", "-c", _LAUNCHER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdin is not None and launcher.stdout is not None
    launcher.stdin.write(json.dumps(spec))
    launcher.stdin.close()
    pid_line = launcher.stdout.readline()
    if not pid_line:
        launcher.wait()
        raise RuntimeError(f"could not start {argv[0]} (launcher exit {launcher.returncode})")
    pid = int(pid_line)
    killed = False
    if kill_when is not None:
        while launcher.poll() is None:
            if not killed and kill_when():
                os.kill(pid, signal.SIGKILL)
                killed = True
            time.sleep(0.02)
    report = json.loads(launcher.stdout.read())
    launcher.wait()
    return ChildResult(**report, killed=killed)


# -- the tools ---------------------------------------------------------------


@dataclass(frozen=True)
class CopyJob:
    """One copy of ``bucket``: files land under ``dest``; ``state`` keeps tool state."""

    source: Source
    bucket: str
    dest: Path
    state: Path


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    env: dict[str, str]
    #: Where the copied objects appear, as ``<root>/<key>``.
    root: Path


def base_env(source: Source, state: Path) -> dict[str, str]:
    """The environment every tool gets: the source's keys and no user AWS config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("NODE_OPTIONS", "RCLONE_CONFIG")
    }
    state.mkdir(parents=True, exist_ok=True)
    # Empty AWS config files: the tools' defaults, whatever is in ~/.aws.
    for name in ("aws-config", "aws-credentials"):
        (state / name).touch()
    env.update(
        AWS_ACCESS_KEY_ID=source.credentials.access_key,
        AWS_SECRET_ACCESS_KEY=source.credentials.secret_key,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(state / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(state / "aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    # AWS_CA_BUNDLE (dropped above with every AWS_ variable) breaks rclone 1.60
    # even over plain http; the others do not use it over http either.
    return env


class Tool:
    """A copy tool: how to copy a bucket, and how to carry on an interrupted copy."""

    name = ""

    def settings(self) -> str:
        """The settings the results are for, in words."""
        raise NotImplementedError

    def copy(self, job: CopyJob) -> Invocation:
        raise NotImplementedError

    def resume(self, job: CopyJob) -> Invocation:
        """Carry on after a kill; by default the same command again."""
        return self.copy(job)

    def copied_bytes(self, job: CopyJob, log_dir: Path, expected: Mapping[str, Expected]) -> int:
        """Bytes the finished run transferred (for resume and re-runs)."""
        raise NotImplementedError

    def step_seconds(self, job: CopyJob, log_dir: Path) -> dict[str, float] | None:
        """Where the run spent its time, when the tool says so."""
        return None

    def failure_note(self, job: CopyJob, log_dir: Path) -> str:
        """Why a run exited non-zero, in a line: by default the last line of its stderr."""
        lines = (log_dir / "stderr").read_text(encoding="utf-8", errors="replace").splitlines()
        return next((line.strip() for line in reversed(lines) if line.strip()), "no stderr")

    #: Whether ``warm_up`` has a command to run.
    needs_warm_up = False

    def warm_up(self, job: CopyJob) -> Invocation:
        """An untimed command to run once per source before the rounds."""
        raise NotImplementedError


class Exitplan(Tool):
    name = "exitplan"

    def __init__(
        self, concurrency: int | None, workers: int | None = None, tree: Path | None = None
    ) -> None:
        self.concurrency = concurrency
        #: ``--workers N``: a local Dask cluster of N worker processes; None: threads.
        self.workers = workers
        if workers is not None:
            self.name = f"exitplan-dask{workers}"
        #: The checkout whose exitplan runs: this work tree unless ``--before``.
        self.tree = tree or REPO_ROOT
        if tree is not None:
            self.name = BEFORE_TOOL

    def settings(self) -> str:
        config = exitplan_transfer_defaults()
        if self.concurrency is not None:
            config["concurrency"] = self.concurrency
        shown = ", ".join(f"{k}={v}" for k, v in config.items() if v is not None)
        how = "`exitplan export`"
        if self.workers is not None:
            how = f"`exitplan export --workers {self.workers}` (a local Dask cluster)"
        if self.tree != REPO_ROOT:
            how = f"`exitplan export` from {self.tree}"
        return f"{how} (CLI subprocess), one local destination; transfer: {shown}"

    def _config(self, job: CopyJob) -> Path:
        path = job.state / "bench.yaml"
        transfer = f"\ntransfer: {{concurrency: {self.concurrency}}}" if self.concurrency else ""
        path.write_text(
            "source:\n"
            f"  aws: {{regions: [{REGION}], endpoint_url: {json.dumps(job.source.endpoint)}}}\n"
            f"workspace: {json.dumps(str(job.state / 'workspace'))}\n"
            "destinations:\n"
            f"  - {{name: bench, storage: {{driver: local, path: {json.dumps(str(job.dest))}}}}}"
            f"{transfer}\n",
            encoding="utf-8",
        )
        return path

    def _invocation(self, job: CopyJob, command: str) -> Invocation:
        config = self._config(job)
        argv = [sys.executable, "-m", "orchestrator.cli", command, "--config", str(config)]
        if command == "export":
            argv += ["--only", "s3"]  # the bucket is the job; s3rver serves nothing else
        if self.workers is not None:
            argv += ["--workers", str(self.workers)]
        argv += ["--quiet", "--output", "json"]
        # This work tree's exitplan (or --before's), whatever else is installed.
        env = {**base_env(job.source, job.state), "PYTHONPATH": str(self.tree)}
        return Invocation(argv, env, job.dest / "s3" / job.bucket)

    def copy(self, job: CopyJob) -> Invocation:
        return self._invocation(job, "export")

    def resume(self, job: CopyJob) -> Invocation:
        return self._invocation(job, "resume")

    def copied_bytes(self, job: CopyJob, log_dir: Path, expected: Mapping[str, Expected]) -> int:
        report = read_exitplan_report(log_dir, job.state / "workspace")
        return sum(int(k["copied_this_run_bytes"]) for k in report["kinds"] if k["kind"] == "s3")

    def step_seconds(self, job: CopyJob, log_dir: Path) -> dict[str, float] | None:
        try:
            report = read_exitplan_report(log_dir, job.state / "workspace")
        except RuntimeError:
            return None
        return {
            step["name"]: (
                datetime.datetime.fromisoformat(step["finished_at"])
                - datetime.datetime.fromisoformat(step["started_at"])
            ).total_seconds()
            for step in report["steps"]
            if step.get("finished_at")
        }

    needs_warm_up = True

    def failure_note(self, job: CopyJob, log_dir: Path) -> str:
        try:
            report = read_exitplan_report(log_dir, job.state / "workspace")
        except RuntimeError:
            return super().failure_note(job, log_dir)
        failed = [step["name"] for step in report["steps"] if step["status"] == "failed"]
        return f"status {report['status']}; failed steps: {', '.join(failed) or 'none'}"

    def warm_up(self, job: CopyJob) -> Invocation:
        # moto builds each service's backend on first use; one untimed export
        # first, so no round pays for that.
        return self._invocation(job, "export")


def read_exitplan_report(log_dir: Path, workspace: Path) -> dict[str, Any]:
    """The run's report: printed on stdout (``--output json``), else the newest report.json."""
    try:
        report: dict[str, Any] = json.loads((log_dir / "stdout").read_text(encoding="utf-8"))
        return report
    except (OSError, ValueError):
        reports = sorted(
            (workspace / "runs").glob("*/report.json"), key=lambda p: p.stat().st_mtime
        )
        if not reports:
            raise RuntimeError(f"exitplan wrote no report; see {log_dir}/stderr") from None
        newest: dict[str, Any] = json.loads(reports[-1].read_text(encoding="utf-8"))
        return newest


def exitplan_transfer_defaults() -> dict[str, Any]:
    """exitplan's copy-engine settings when the config names none."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from orchestrator.config import TransferConfig

    return dataclasses.asdict(TransferConfig())


#: rclone -v logs one line per file it copies.
_RCLONE_COPIED = re.compile(r"INFO\s+:\s+(.+): Copied \((?:new|replaced existing)\)")


class Rclone(Tool):
    def __init__(self, name: str, flags: Sequence[str], server: str) -> None:
        self.name = name
        # Against s3rver, rclone without --fast-list copies nothing and exits 0.
        self.flags = [*flags, *(["--fast-list"] if server == "s3rver" else [])]

    def settings(self) -> str:
        flags = " ".join(self.flags) or "default flags"
        return (
            f"`rclone copy -v` (-v: a log line per file), {flags}; "
            "remote: provider Other, force_path_style = true"
        )

    def copy(self, job: CopyJob) -> Invocation:
        config = job.state / "rclone.conf"
        config.write_text(
            "[source]\n"
            "type = s3\n"
            "provider = Other\n"
            f"access_key_id = {job.source.credentials.access_key}\n"
            f"secret_access_key = {job.source.credentials.secret_key}\n"
            f"endpoint = {job.source.endpoint}\n"
            f"region = {REGION}\n"
            "force_path_style = true\n",
            encoding="utf-8",
        )
        argv = ["rclone", "--config", str(config), "copy", f"source:{job.bucket}", str(job.dest)]
        # -v logs each copied file: how re-runs and resumes are counted.
        return Invocation([*argv, *self.flags, "-v"], base_env(job.source, job.state), job.dest)

    def copied_bytes(self, job: CopyJob, log_dir: Path, expected: Mapping[str, Expected]) -> int:
        text = (log_dir / "stderr").read_text(encoding="utf-8", errors="replace")
        return sum(expected[m.group(1)].size for m in _RCLONE_COPIED.finditer(text))


class AwsCli(Tool):
    name = "aws-cli"

    def settings(self) -> str:
        return "`aws s3 cp --recursive --only-show-errors`, default s3 transfer settings"

    def copy(self, job: CopyJob) -> Invocation:
        argv = ["aws", "s3", "cp", "--recursive", "--only-show-errors"]
        argv += ["--endpoint-url", job.source.endpoint, f"s3://{job.bucket}", str(job.dest)]
        return Invocation(argv, base_env(job.source, job.state), job.dest)


class Boto3Loop(Tool):
    name = "boto3-32"

    def settings(self) -> str:
        return f"one GET per object on {BOTO3_THREADS} threads (`s3_export.py boto3-get`)"

    def copy(self, job: CopyJob) -> Invocation:
        argv = [sys.executable, str(Path(__file__).resolve()), "boto3-get"]
        argv += ["--endpoint", job.source.endpoint, "--bucket", job.bucket]
        argv += ["--dest", str(job.dest), "--threads", str(BOTO3_THREADS)]
        return Invocation(argv, base_env(job.source, job.state), job.dest)


def build_tools(
    names: Sequence[str], server: str, concurrency: int | None, before: Path | None = None
) -> list[Tool]:
    available: dict[str, Callable[[], Tool]] = {
        BEFORE_TOOL: lambda: Exitplan(concurrency, tree=before),
        "exitplan": lambda: Exitplan(concurrency),
        "exitplan-dask1": lambda: Exitplan(concurrency, workers=1),
        "exitplan-dask2": lambda: Exitplan(concurrency, workers=2),
        "rclone": lambda: Rclone("rclone", [], server),
        "rclone-16": lambda: Rclone("rclone-16", ["--transfers", "16", "--checkers", "16"], server),
        "aws-cli": AwsCli,
        "boto3-32": Boto3Loop,
    }
    return [available[name]() for name in names]


def check_binaries(names: Sequence[str]) -> None:
    """Stop early, naming the install step, when a tool is missing."""
    if any(n.startswith("rclone") for n in names) and shutil.which("rclone") is None:
        raise SystemExit("rclone is missing: apt-get install rclone")
    if "aws-cli" in names and shutil.which("aws") is None:
        raise SystemExit("aws is missing: pip install -r bench/requirements.txt")


# -- measurements ------------------------------------------------------------


@dataclass
class Run:
    """One measured run of one tool."""

    server: str
    workload: str
    tool: str
    kind: str  # "copy" | "no-op re-run" | "killed" | "resume"
    round: int
    child: ChildResult
    objects: int
    bytes: int
    verified: bool
    problems: list[str]
    #: Bytes a re-run or resume transferred (tools in RERUN_TOOLS).
    copied_bytes: int | None = None
    #: Seconds per step, for tools that report them (exitplan: inventory, export:s3, ...).
    steps: dict[str, float] | None = None
    #: Why the run exited non-zero (not for killed runs).
    failure: str | None = None
    #: Resume only: bytes on disk after the SIGKILL (partial files included) ...
    on_disk_at_kill_bytes: int | None = None
    #: ... and of those, the bytes of files complete and correct.
    complete_at_kill_bytes: int | None = None

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["child"] = dataclasses.asdict(self.child)
        return data


class Bench:
    """Runs the phases against one source and collects ``Run`` records.

    Each run gets ``<work_dir>/runs/<n>-<server>-<workload>-<tool>/`` with
    ``dest/`` (removed once checked) and ``state/`` (config, journal, logs;
    kept for a look after the benchmark).
    """

    def __init__(
        self,
        source: Source,
        tools: Sequence[Tool],
        work_dir: Path,
        seed: int,
        warm_up: bool = True,
    ) -> None:
        self.source = source
        self.tools = list(tools)
        self.work_dir = work_dir
        self.seed = seed
        self.runs: list[Run] = []
        self._serial = 0
        self._warm = not warm_up

    def _warm_up(self, workload: Workload) -> None:
        for tool in self.tools:
            if not tool.needs_warm_up:
                continue
            job = self._job(tool, "warm-up", workload.bucket)
            invocation = tool.warm_up(job)
            child = run_child(invocation.argv, env=invocation.env, log_dir=job.state / "warm-up")
            log(f"[{self.source.server} warm-up] {tool.name}: {child.wall_s:.2f} s")
            shutil.rmtree(job.dest, ignore_errors=True)
        self._warm = True

    def _job(self, tool: Tool, label: str, bucket: str) -> CopyJob:
        self._serial += 1
        name = f"{self._serial:04d}-{self.source.server}-{label}-{tool.name}"
        base = self.work_dir / "runs" / name.replace("+", "")
        shutil.rmtree(base, ignore_errors=True)
        (base / "dest").mkdir(parents=True)
        (base / "state").mkdir()
        return CopyJob(self.source, bucket, base / "dest", base / "state")

    def _measure(
        self,
        tool: Tool,
        job: CopyJob,
        invocation: Invocation,
        workload: Workload,
        expected: Mapping[str, Expected],
        kind: str,
        round_no: int,
        kill_when: Callable[[], bool] | None = None,
    ) -> Run:
        log_dir = job.state / f"log-{kind.replace(' ', '-')}-{round_no}"
        child = run_child(invocation.argv, env=invocation.env, log_dir=log_dir, kill_when=kill_when)
        check = verify_copy(invocation.root, expected)
        copied = None
        if kind in ("no-op re-run", "resume"):
            try:
                copied = tool.copied_bytes(job, log_dir, expected)
            except (RuntimeError, KeyError, ValueError) as exc:  # a failed run: no report
                log(f"{tool.name}: bytes copied unknown ({exc})")
        steps = tool.step_seconds(job, log_dir) if kind != "killed" else None
        failure = None
        if child.exit_code != 0 and kind != "killed":
            failure = tool.failure_note(job, log_dir)
        run = Run(
            server=self.source.server,
            workload=workload.name,
            tool=tool.name,
            kind=kind,
            round=round_no,
            child=child,
            objects=len(workload.objects),
            bytes=workload.total_bytes,
            verified=check.ok,
            problems=check.problems[:5],
            copied_bytes=copied,
            steps=steps,
            failure=failure,
        )
        self.runs.append(run)
        status = "verified" if check.ok else f"NOT VERIFIED ({'; '.join(check.problems[:2])})"
        if kind == "killed":
            status = f"{check.good_bytes / MIB:.1f} MiB in complete files"
        log(
            f"[{self.source.server} {workload.name} {kind} {round_no}] {tool.name}: "
            f"{child.wall_s:.2f} s wall, {child.cpu_s:.2f} s CPU, "
            f"{child.max_rss_kib / KIB:.0f} MiB RSS, exit {child.exit_code}, {status}"
        )
        return run

    def rounds(self, workload: Workload, rounds: int, noop: bool) -> None:
        """Copy ``workload`` with every tool, round-robin; then the no-op re-runs."""
        log(f"seeding {workload.name} into {self.source.server}: {workload.describe()}")
        expected = seed_workload(self.source, workload, self.seed)
        if not self._warm:
            self._warm_up(workload)
        kept: dict[str, CopyJob] = {}
        for round_no in range(1, rounds + 1):
            # Rotate the order so no tool always runs first (warm caches) or last.
            shift = (round_no - 1) % len(self.tools)
            for tool in self.tools[shift:] + self.tools[:shift]:
                job = self._job(tool, workload.name, workload.bucket)
                self._measure(tool, job, tool.copy(job), workload, expected, "copy", round_no)
                if noop and round_no == rounds and tool.name in RERUN_TOOLS:
                    kept[tool.name] = job
                else:
                    shutil.rmtree(job.dest, ignore_errors=True)
        for tool in self.tools:
            finished = kept.get(tool.name)
            if finished is None:
                continue
            for round_no in range(1, rounds + 1):
                invocation = tool.copy(finished)
                self._measure(
                    tool, finished, invocation, workload, expected, "no-op re-run", round_no
                )
            shutil.rmtree(finished.dest, ignore_errors=True)

    def resume(self, workload: Workload, fraction: float) -> None:
        """SIGKILL each re-run tool at ``fraction`` of the bytes on disk, then carry on."""
        log(f"seeding {workload.name} into {self.source.server}: {workload.describe()}")
        expected = seed_workload(self.source, workload, self.seed)
        threshold = workload.total_bytes * fraction
        for tool in self.tools:
            if tool.name not in RERUN_TOOLS:
                continue
            job = self._job(tool, workload.name, workload.bucket)
            first = tool.copy(job)

            def past_threshold(dest: Path = job.dest) -> bool:
                return bytes_on_disk(dest) >= threshold

            killed = self._measure(
                tool, job, first, workload, expected, "killed", 1, kill_when=past_threshold
            )
            if not killed.child.killed:
                log(f"{tool.name} finished before the kill; lower --resume-at or raise the sizes")
            at_kill = verify_copy(first.root, expected)
            on_disk = bytes_on_disk(job.dest)
            resumed = self._measure(tool, job, tool.resume(job), workload, expected, "resume", 1)
            resumed.on_disk_at_kill_bytes = on_disk
            resumed.complete_at_kill_bytes = at_kill.good_bytes
            shutil.rmtree(job.dest, ignore_errors=True)


# -- the report --------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    tool: str
    runs: int
    verified: int
    wall_s: float
    cpu_s: float
    max_rss_mib: float
    objects: int
    bytes: int

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.wall_s

    @property
    def objects_per_s(self) -> float:
        return self.objects / self.wall_s

    @property
    def cpu_s_per_gb(self) -> float:
        return self.cpu_s / (self.bytes / GB)

    @property
    def cpu_ms_per_object(self) -> float:
        return 1000 * self.cpu_s / self.objects


def summarize(runs: Sequence[Run]) -> Summary:
    """Medians of wall and CPU time; the highest peak RSS of any run."""
    return Summary(
        tool=runs[0].tool,
        runs=len(runs),
        verified=sum(r.verified for r in runs),
        wall_s=statistics.median(r.child.wall_s for r in runs),
        cpu_s=statistics.median(r.child.cpu_s for r in runs),
        max_rss_mib=max(r.child.max_rss_kib for r in runs) / KIB,
        objects=runs[0].objects,
        bytes=runs[0].bytes,
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def copy_table(runs: Sequence[Run], order: Sequence[str]) -> list[str]:
    summaries = [
        summarize([r for r in runs if r.tool == name])
        for name in order
        if any(r.tool == name for r in runs)
    ]
    # Ratios only against an exitplan run that worked.
    base = next((s for s in summaries if s.tool == "exitplan" and s.verified), None)
    rows = []
    for s in summaries:
        wall_ratio = f"{s.wall_s / base.wall_s:.2f}" if base else "-"
        cpu_ratio = f"{s.cpu_s / base.cpu_s:.2f}" if base and base.cpu_s else "-"
        rows.append(
            [
                s.tool,
                f"{s.verified}/{s.runs}",
                f"{s.wall_s:.2f}",
                f"{s.mb_per_s:.1f}",
                f"{s.objects_per_s:.1f}" if s.objects_per_s < 100 else f"{s.objects_per_s:.0f}",
                f"{s.cpu_s_per_gb:.1f}",
                f"{s.cpu_ms_per_object:.2f}",
                f"{s.max_rss_mib:.0f}",
                wall_ratio,
                cpu_ratio,
            ]
        )
    header = [
        "tool",
        "verified",
        "median wall s",
        "MB/s",
        "objects/s",
        "CPU s/GB",
        "CPU ms/object",
        "peak RSS MiB",
        "wall / exitplan",
        "CPU / exitplan",
    ]
    return table(header, rows)


def noop_table(runs: Sequence[Run], order: Sequence[str]) -> list[str]:
    rows = []
    for name in order:
        mine = [r for r in runs if r.tool == name]
        if not mine:
            continue
        s = summarize(mine)
        copied = max((r.copied_bytes or 0) for r in mine)
        rows.append(
            [
                name,
                f"{s.verified}/{s.runs}",
                f"{s.wall_s:.2f}",
                f"{s.cpu_s:.2f}",
                f"{s.cpu_ms_per_object:.3f}",
                f"{s.max_rss_mib:.0f}",
                str(copied),
            ]
        )
    header = ["tool", "verified", "median wall s", "median CPU s", "CPU ms/object"]
    return table([*header, "peak RSS MiB", "bytes copied again (max)"], rows)


def resume_table(runs: Sequence[Run], order: Sequence[str]) -> list[str]:
    rows = []
    for name in order:
        resumed = next((r for r in runs if r.tool == name and r.kind == "resume"), None)
        if resumed is None:
            continue
        on_disk = resumed.on_disk_at_kill_bytes or 0
        copied = resumed.copied_bytes or 0
        # What was on disk had been transferred once; a perfect resume copies
        # only the rest. Anything beyond is transferred again.
        again = on_disk + copied - resumed.bytes
        rows.append(
            [
                name,
                f"{on_disk / MIB:.1f}",
                f"{(resumed.complete_at_kill_bytes or 0) / MIB:.1f}",
                f"{copied / MIB:.1f}",
                f"{again / MIB:.1f}",
                f"{resumed.child.wall_s:.2f}",
                "yes" if resumed.verified else "NO",
            ]
        )
    header = ["tool", "on disk after SIGKILL MiB", "in complete files MiB"]
    header += ["copied by the resume MiB", "transferred again MiB", "resume wall s", "verified"]
    return table(header, rows)


def step_note(runs: Sequence[Run]) -> list[str]:
    """exitplan's wall time split into inventory, the S3 export and the rest (medians)."""
    steps = [r.steps for r in runs if r.tool == "exitplan" and r.steps and r.verified]
    if not steps:
        return []
    # The export step is "export" (every kind at once) since the deadline planner,
    # "export:s3" before; an inventory step only where the run has one.
    inventory = statistics.median(s.get("inventory", 0.0) for s in steps)
    export = statistics.median(s.get("export", s.get("export:s3", 0.0)) for s in steps)
    total = statistics.median(sum(s.values()) for s in steps)
    wall = statistics.median(r.child.wall_s for r in runs if r.tool == "exitplan" and r.verified)
    return [
        "",
        f"exitplan's run by step (median s): inventory {inventory:.2f}, export {export:.2f}, "
        f"other steps {total - inventory - export:.2f}; the other {wall - total:.2f} s of its "
        "wall time are start-up and exit.",
    ]


def tool_versions() -> dict[str, str]:
    def first_line(argv: Sequence[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unavailable ({type(exc).__name__})"
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0] if text else "unknown"

    import moto

    versions = {
        "exitplan": first_line([sys.executable, "-m", "orchestrator.cli", "--version"])
        + f" (work tree at {git_head()})",
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "moto": moto.__version__,
        "rclone": first_line(["rclone", "version"]),
        "aws-cli": first_line(["aws", "--version"]),
    }
    if S3RVER_BIN.exists():
        package = NODE_PREFIX / "node_modules" / "s3rver" / "package.json"
        versions["s3rver"] = json.loads(package.read_text(encoding="utf-8"))["version"]
        versions["node"] = first_line(["node", "--version"])
    return versions


def git_head() -> str:
    """The commit of the work tree, marked when it has changes (read-only git calls)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(REPO_ROOT), "status", "--porcelain", "-uno"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"{head}{' with uncommitted changes' if dirty else ''}"


def machine() -> dict[str, str]:
    model = "unknown"
    memory = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / KIB / KIB:.1f} GiB"
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        "kernel": platform.release(),
        "load average at start": load,
    }


def write_results(
    path: Path,
    *,
    runs: Sequence[Run],
    tools: Mapping[str, Sequence[Tool]],
    workloads: Sequence[Workload],
    args: argparse.Namespace,
    machine_facts: Mapping[str, str],
    versions: Mapping[str, str],
    started: datetime.datetime,
    elapsed_s: float,
) -> None:
    """Write the Markdown results; the raw runs go beside it as JSON."""
    order = list(args.tools)
    lines = ["# Benchmark: S3 bucket to a local directory", ""]
    if args.quick:
        lines += ["**Smoke run (`--quick`): sizes too small to compare tools by.**", ""]
    lines += [
        f"Run {started:%Y-%m-%d %H:%M %Z} in {elapsed_s / 60:.1f} min with:",
        "",
        "```",
        shlex.join([Path(sys.executable).name, *sys.argv]),
        "```",
        "",
        "Copies from an S3 server on 127.0.0.1 to the local disk. Times are the",
        f"median of {args.rounds} interleaved runs, each into an empty directory and",
        "checked file by file (count and sha256). Wall time includes start-up; CPU",
        "(user+sys) and peak RSS are the tool process's, from `wait4` (peak RSS: the",
        "highest of the runs; about 10 MiB is the launcher's floor). MB/s and GB are",
        "decimal. `wall / exitplan` above 1: the tool took longer than exitplan.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in machine_facts.items()]
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in versions.items()]
    lines += ["", "## Workloads", ""]
    lines += [f"- {w.name} (bucket `{w.bucket}`): {w.describe()}" for w in workloads]
    for server, server_tools in tools.items():
        lines += ["", f"## Source: {server}", "", "Settings:", ""]
        lines += [f"- {t.name}: {t.settings()}" for t in server_tools]
        mine = [r for r in runs if r.server == server]
        for workload in workloads:
            copies = [r for r in mine if r.workload == workload.name and r.kind == "copy"]
            if copies:
                lines += ["", f"### {workload.name}: copy ({workload.describe()})", ""]
                lines += copy_table(copies, order)
                lines += step_note(copies)
            noops = [r for r in mine if r.workload == workload.name and r.kind == "no-op re-run"]
            if noops:
                lines += ["", f"### {workload.name}: no-op re-run over a finished copy", ""]
                lines += noop_table(noops, order)
        resumes = [r for r in mine if r.kind in ("killed", "resume")]
        if resumes:
            lines += [
                "",
                f"### {resumes[0].workload}: SIGKILL at {args.resume_at:.0%} of the bytes, then resume",
                "",
                "`transferred again` = on disk after the kill + copied by the resume - total:",
                "partial files thrown away, and complete files copied once more. Copied by",
                "the resume: exitplan's report `copied_this_run_bytes`; for rclone, the sizes",
                "of the files it logs (-v) as copied.",
                "",
            ]
            lines += resume_table(resumes, order)
    # A killed run is meant to leave an incomplete copy; it is judged by its resume.
    failed = [r for r in runs if r.kind != "killed" and (not r.verified or r.child.exit_code)]
    lines += ["", "## Runs that failed verification or exited non-zero", ""]
    for r in failed:
        why = [*r.problems, *([r.failure] if r.failure else [])]
        lines.append(
            f"- {r.server} {r.workload} {r.kind} {r.round} {r.tool}: exit {r.child.exit_code}, "
            f"{'verified' if r.verified else 'NOT verified'}; {'; '.join(why)}"
        )
    if not failed:
        lines.append("- none")
    lines += ["", f"Every run, raw: `{path.with_suffix('.json').name}` beside this file.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + kept_sections(path), encoding="utf-8")
    path.with_suffix(".json").write_text(
        json.dumps([r.as_json() for r in runs], indent=1) + "\n", encoding="utf-8"
    )


#: Sections of the results file written by hand or by other benchmarks: a rerun
#: replaces only what comes before the first of them.
KEPT_HEADINGS = ("## Against the targets", "## Dask executor")


def kept_sections(path: Path) -> str:
    """What ``path`` holds from its first kept section on (``KEPT_HEADINGS``, or any
    top-level heading after the first line), byte for byte; "" when none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    lines = text.splitlines(keepends=True)
    offset = len(lines[0]) if lines else 0
    for line in lines[1:]:
        if line.startswith(KEPT_HEADINGS) or line.startswith("# "):
            return "\n" + text[offset:]
        offset += len(line)
    return ""


# -- the boto3 GET loop (run as a child by the benchmark) ---------------------


def boto3_get(argv: Sequence[str]) -> int:
    """Copy a bucket with one plain GET per object on N threads; the baseline."""
    parser = argparse.ArgumentParser(prog="s3_export.py boto3-get")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=BOTO3_THREADS)
    args = parser.parse_args(argv)
    source = Source(
        "any",
        args.endpoint,
        Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]),
    )
    client = source.client(max_pool_connections=args.threads)

    def fetch(key: str) -> None:
        path = args.dest / key
        path.parent.mkdir(parents=True, exist_ok=True)
        body = client.get_object(Bucket=args.bucket, Key=key)["Body"]
        with path.open("wb") as out:
            for chunk in body.iter_chunks(MIB):
                out.write(chunk)

    keys = (
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=args.bucket)
        for obj in page.get("Contents", [])
    )
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        for future in [pool.submit(fetch, key) for key in keys]:
            future.result()
    return 0


# -- the command line --------------------------------------------------------


def log(message: str) -> None:
    print(f"{datetime.datetime.now():%H:%M:%S} {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="s3_export.py",
        description="Benchmark exitplan's S3 export against rclone, the AWS CLI and boto3.",
    )
    parser.add_argument(
        "--server",
        nargs="+",
        choices=("moto", "s3rver"),
        default=["moto"],
        help="the source(s), one after the other (default: moto)",
    )
    parser.add_argument(
        "--tools",
        type=lambda s: s.split(","),
        default=list(TOOLS),
        metavar="A,B",
        help=f"tools to compare (default: {','.join(TOOLS)})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per tool (default: 3)")
    parser.add_argument("--w1-objects", type=int, default=2000, metavar="N", help="default: 2000")
    parser.add_argument("--w1-min-kib", type=int, default=4, metavar="KIB", help="default: 4")
    parser.add_argument("--w1-max-kib", type=int, default=64, metavar="KIB", help="default: 64")
    parser.add_argument("--w2-objects", type=int, default=8, metavar="N", help="default: 8")
    parser.add_argument("--w2-mib", type=int, default=64, metavar="MIB", help="default: 64")
    parser.add_argument(
        "--exitplan-concurrency",
        type=int,
        metavar="N",
        help="exitplan's transfer.concurrency (default: exitplan's own default)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help=f"another exitplan checkout (e.g. `git archive` of an older commit), run as "
        f"the tool {BEFORE_TOOL}",
    )
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="skip the untimed exitplan run before the rounds (a 100,000-object memory "
        "measurement need not pay for it twice)",
    )
    parser.add_argument("--no-noop", action="store_true", help="skip the no-op re-runs")
    parser.add_argument("--no-resume", action="store_true", help="skip the kill-and-resume")
    parser.add_argument(
        "--resume-at",
        type=float,
        default=0.5,
        metavar="FRACTION",
        help="SIGKILL once this fraction of the bytes is on disk (default: 0.5)",
    )
    parser.add_argument("--seed", type=int, default=1, help="content seed (default: 1)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        metavar="DIR",
        help="run directories and s3rver data (default: bench/.work)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help="Markdown results (default: bench/RESULTS.md; with --quick, "
        "RESULTS-quick.md in --work-dir); the raw runs go beside it as .json",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: W1 200 objects, W2 2 x 8 MiB, 1 round",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.w1_objects, args.w2_objects, args.w2_mib, args.rounds = 200, 2, 8, 1
    known = (*TOOLS, *DASK_TOOLS, BEFORE_TOOL)
    unknown = sorted(set(args.tools) - set(known))
    if unknown:
        parser.error(f"--tools: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    if (BEFORE_TOOL in args.tools) != (args.before is not None):
        parser.error(f"--tools {BEFORE_TOOL} and --before DIR go together")
    if args.rounds < 1 or not 0 < args.resume_at < 1:
        parser.error("--rounds must be at least 1 and --resume-at between 0 and 1")
    if args.results is None:
        args.results = args.work_dir / "RESULTS-quick.md" if args.quick else DEFAULT_RESULTS
    return args


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["boto3-get"]:
        return boto3_get(argv[1:])
    args = parse_args(argv)
    check_binaries(args.tools)
    started = datetime.datetime.now().astimezone()
    clock = time.monotonic()
    facts = machine()
    w1 = small_objects(args.w1_objects, args.w1_min_kib, args.w1_max_kib, args.seed)
    w2 = large_objects(args.w2_objects, args.w2_mib)
    workloads = [
        Workload("W1", "bench-w1", tuple(w1)),
        Workload("W2", "bench-w2", tuple(w2)),
    ]
    both = Workload("W1+W2", "bench-resume", tuple(w1 + w2))
    # The previous benchmark's run directories go; this one's stay for a look.
    shutil.rmtree(args.work_dir / "runs", ignore_errors=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    tools_by_server: dict[str, list[Tool]] = {}
    for server in args.server:
        tools = build_tools(args.tools, server, args.exitplan_concurrency, args.before)
        tools_by_server[server] = tools
        with open_source(server, args.work_dir) as source:
            bench = Bench(source, tools, args.work_dir, args.seed, warm_up=not args.no_warm_up)
            for workload in workloads:
                bench.rounds(workload, args.rounds, noop=not args.no_noop)
            if not args.no_resume:
                bench.resume(both, args.resume_at)
            empty_account(source)
        runs += bench.runs
    workloads_shown = workloads if args.no_resume else [*workloads, both]
    write_results(
        args.results,
        runs=runs,
        tools=tools_by_server,
        workloads=workloads_shown,
        args=args,
        machine_facts=facts,
        versions=tool_versions(),
        started=started,
        elapsed_s=time.monotonic() - clock,
    )
    log(f"results: {args.results}")
    return 0 if all(r.verified for r in runs if r.kind != "killed") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
