"""Benchmark: replay a 20-step playbook onto one sshd host with exitplan and the usual tools.

The host is a real OpenSSH ``sshd`` on 127.0.0.3 with its own host key,
pinned by every tool. The playbook, written once per tool in its own
language, is the same 20 steps:

  1      a directory
  2-6    five files of 1, 5, 10, 25 and 50 KiB
  7-8    two templates
  9-16   eight commands
  17     the directory for the pidfile
  18     a service start (python3 -m http.server, backgrounded, pidfile)
  19     wait for its port
  20     a health check (HTTP 200 from the service)

The tools, each run as a subprocess (start-up included) into a freshly
emptied target with the service stopped:

  exitplan        ``exitplan replay`` of a run whose host is the sshd
  ansible         ``ansible-playbook`` with its defaults (facts gathered,
                  ControlPersist as Ansible ships it, no pipelining)
  ansible-tuned   pipelining on, ControlPersist, no fact gathering
  pyinfra         ``pyinfra INVENTORY deploy.py -y``
  floor           one paramiko connection with TCP_NODELAY, one SFTP session,
                  one exec or one put per step, nothing checked: the floor

Runs are interleaved round-robin; the result is the median of ``--runs``
(default 5). Results go to ``bench/RESULTS.md`` under "Replay". Only
127.0.0.0/8 is contacted. ``pip install ansible-core pyinfra`` first (the
benchmark's tools, not exitplan's dependencies).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.sshd import KeyPair, SshdServer, generate_key, start_sshd  # noqa: E402

ADDRESS = "127.0.0.3"
#: The account every tool logs in as: a service account whose shell is /bin/sh, so no
#: tool pays for someone's interactive rc files (root's here runs `pyenv init`).
BENCH_USER = "exitplan-bench"
FILE_SIZES_KIB = (1, 5, 10, 25, 50)
COMMANDS = (
    ["mkdir", "-p", "{T}/work"],
    ["touch", "{T}/work/a"],
    ["cp", "{T}/f1.bin", "{T}/work/copy.bin"],
    ["sha256sum", "{T}/f5.bin"],
    ["ls", "-la", "{T}"],
    ["id", "-u"],
    ["uname", "-r"],
    ["chmod", "0640", "{T}/app.conf"],
)
TEMPLATE_CONF = "name={{ app_name }}\nport={{ port }}\nroot={{ target }}\n"
TEMPLATE_ENV = "APP_NAME={{ app_name }}\nAPP_PORT={{ port }}\n"
START = (
    "nohup python3 -m http.server {P} --bind 127.0.0.1 --directory {T} "
    "</dev/null >{T}/run/web.log 2>&1 & echo $! > {T}/run/web.pid"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, root: Path, server: SshdServer, key: KeyPair) -> None:
        self.root = root
        self.server = server
        self.user = BENCH_USER
        self.key = key
        self.target = root / "target"
        self.port = free_port()
        self.files = root / "files"
        self.files.mkdir()
        for index, size in enumerate(FILE_SIZES_KIB, start=1):
            (self.files / f"f{index}.bin").write_bytes(os.urandom(size * 1024))
        (self.files / "app.conf.j2").write_text(TEMPLATE_CONF)
        (self.files / "app.env.j2").write_text(TEMPLATE_ENV)
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(server.known_hosts_line() + "\n")
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}

    def sub(self, text: str) -> str:
        return text.replace("{T}", str(self.target)).replace("{P}", str(self.port))

    def reset(self) -> None:
        pidfile = self.target / "run" / "web.pid"
        if pidfile.exists():
            pid = pidfile.read_text().strip()
            subprocess.run(["kill", "-TERM", pid], check=False, capture_output=True)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.02)  # waiting for the old service to exit before the next run
        shutil.rmtree(self.target, ignore_errors=True)
        self.target.mkdir()
        shutil.chown(self.target, BENCH_USER, BENCH_USER)
        # the directory step still does its work: it sets the mode
        self.target.chmod(0o700)

    def check(self) -> None:
        assert self.target.stat().st_mode & 0o777 == 0o755, oct(self.target.stat().st_mode)
        for index in range(1, 6):
            assert (self.target / f"f{index}.bin").read_bytes() == (
                self.files / f"f{index}.bin"
            ).read_bytes()
        assert (self.target / "app.conf").read_text().startswith("name=bench")
        assert (self.target / "run" / "web.pid").exists() and (
            self.target / "work" / "copy.bin"
        ).exists()

    # -- exitplan --------------------------------------------------------

    def setup_exitplan(self) -> list[str]:
        from orchestrator.config import load_config
        from orchestrator.placement.steps import PlaceOutput
        from orchestrator.run.commands import settings_for
        from orchestrator.run.journal import Journal
        from orchestrator.run.serde import to_json
        from tests.support.replay import make_export, ssh_placement

        work = self.root / "exitplan"
        work.mkdir()
        export = make_export(work, {}, secrets=False)
        config = work / "exitplan.yaml"
        config.write_text(
            "source: {aws: {regions: [us-east-1]}}\n"
            f"destinations: [{{name: vault, storage: {{driver: local, path: {export.path}}}}}]\n"
        )
        with Journal(work / ".exitplan" / "journal.sqlite") as journal:
            settings = settings_for("migrate", load_config(config), deadline=None, kinds=None)
            run_id = journal.start_run("migrate", None, to_json(settings))
            journal.start_step(run_id, "place")
            placement = dataclasses.replace(ssh_placement(self.server, self.key), user=BENCH_USER)
            journal.finish_step(run_id, "place", "done", "", to_json(PlaceOutput(placement, ())))
        steps = [f'  - {{id: dir, directory: {{path: "{self.target}", mode: "0755"}}}}']
        for index in range(1, 6):
            steps.append(
                f'  - {{id: f{index}, put: {{src: files/f{index}.bin, dest: "{self.target}/f{index}.bin"}}}}'
            )
        steps.append(
            f'  - {{id: conf, template: {{src: files/app.conf.j2, dest: "{self.target}/app.conf"}}}}'
        )
        steps.append(
            f'  - {{id: env, template: {{src: files/app.env.j2, dest: "{self.target}/app.env"}}}}'
        )
        for index, argv in enumerate(COMMANDS, start=1):
            steps.append(
                f"  - {{id: c{index}, command: {json.dumps([self.sub(a) for a in argv])}}}"
            )
        steps.append(f'  - {{id: run, directory: "{self.target}/run"}}')
        steps.append(f"  - {{id: start, shell: {json.dumps(self.sub(START))}}}")
        steps.append(f"  - {{id: port, wait_for: {{port: {self.port}, interval: 0.02}}}}")
        steps.append(
            f'  - {{id: health, http_check: {{url: "http://127.0.0.1:{self.port}/app.conf", interval: 0.05}}}}'
        )
        playbook = self.root / "exitplan.yaml"
        playbook.write_text(
            f'vars: {{app_name: bench, port: {self.port}, target: "{self.target}"}}\nsteps:\n'
            + "\n".join(steps)
            + "\n"
        )
        return [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "replay",
            run_id,
            "-c",
            str(config),
            "--playbook",
            str(playbook),
            "-q",
            "--workspace",
            str(work / ".exitplan"),
        ] + (["-v"] if os.environ.get("BENCH_VERBOSE") else [])

    # -- ansible ---------------------------------------------------------

    def setup_ansible(self, tuned: bool) -> tuple[list[str], dict[str, str]]:
        work = self.root / ("ansible-tuned" if tuned else "ansible")
        work.mkdir()
        inventory = work / "inventory.ini"
        inventory.write_text(
            f"[bench]\n{ADDRESS} ansible_port={self.server.port} ansible_user={BENCH_USER} "
            f"ansible_ssh_private_key_file={self.key.private} ansible_python_interpreter=/usr/bin/python3 "
            f"ansible_ssh_common_args='-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes'\n"
        )
        tasks = [
            {
                "name": "dir",
                "ansible.builtin.file": {
                    "path": str(self.target),
                    "state": "directory",
                    "mode": "0755",
                },
            }
        ]
        for index in range(1, 6):
            tasks.append(
                {
                    "name": f"f{index}",
                    "ansible.builtin.copy": {
                        "src": str(self.files / f"f{index}.bin"),
                        "dest": f"{self.target}/f{index}.bin",
                    },
                }
            )
        tasks.append(
            {
                "name": "conf",
                "ansible.builtin.template": {
                    "src": str(self.files / "app.conf.j2"),
                    "dest": f"{self.target}/app.conf",
                },
            }
        )
        tasks.append(
            {
                "name": "env",
                "ansible.builtin.template": {
                    "src": str(self.files / "app.env.j2"),
                    "dest": f"{self.target}/app.env",
                },
            }
        )
        for index, argv in enumerate(COMMANDS, start=1):
            tasks.append(
                {
                    "name": f"c{index}",
                    "ansible.builtin.command": {"argv": [self.sub(a) for a in argv]},
                }
            )
        tasks.append(
            {
                "name": "run",
                "ansible.builtin.file": {"path": f"{self.target}/run", "state": "directory"},
            }
        )
        tasks.append({"name": "start", "ansible.builtin.shell": self.sub(START)})
        tasks.append(
            {
                "name": "port",
                "ansible.builtin.wait_for": {"port": self.port, "host": "127.0.0.1", "sleep": 1},
            }
        )
        tasks.append(
            {
                "name": "health",
                "ansible.builtin.uri": {"url": f"http://127.0.0.1:{self.port}/app.conf"},
            }
        )
        play = [
            {
                "hosts": "bench",
                "gather_facts": not tuned,
                "vars": {"app_name": "bench", "port": self.port, "target": str(self.target)},
                "tasks": tasks,
            }
        ]
        site = work / "site.yml"
        site.write_text(json.dumps(play))
        config = work / "ansible.cfg"
        config.write_text("[defaults]\n")
        env = {
            **self.env,
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
        }
        if tuned:
            env["ANSIBLE_PIPELINING"] = "True"
            env["ANSIBLE_SSH_ARGS"] = "-C -o ControlMaster=auto -o ControlPersist=60s"
        return [
            shutil.which("ansible-playbook") or "ansible-playbook",
            "-i",
            str(inventory),
            str(site),
        ], env

    # -- pyinfra ---------------------------------------------------------

    def setup_pyinfra(self) -> list[str]:
        work = self.root / "pyinfra"
        work.mkdir()
        (work / "inventory.py").write_text(
            f"bench = [({ADDRESS!r}, {{'ssh_port': {self.server.port}, 'ssh_user': {BENCH_USER!r}, "
            f"'ssh_key': {str(self.key.private)!r}, 'ssh_known_hosts_file': {str(self.known_hosts)!r}, "
            "'ssh_strict_host_key_checking': 'yes'})]\n"
        )
        lines = [
            "from pyinfra.operations import files, server",
            f"T = {str(self.target)!r}",
            "files.directory(name='dir', path=T, mode='755')",
        ]
        for index in range(1, 6):
            lines.append(
                f"files.put(name='f{index}', src={str(self.files / f'f{index}.bin')!r}, dest=T + '/f{index}.bin')"
            )
        for name in ("conf", "env"):
            lines.append(
                f"files.template(name={name!r}, src={str(self.files / f'app.{name}.j2')!r}, dest=T + '/app.{name}', "
                f"app_name='bench', port={self.port}, target=T)"
            )
        for index, argv in enumerate(COMMANDS, start=1):
            command = " ".join(json.dumps(self.sub(a)) for a in argv)
            lines.append(f"server.shell(name='c{index}', commands=[{command!r}])")
        lines.append("files.directory(name='run', path=T + '/run')")
        lines.append(f"server.shell(name='start', commands=[{self.sub(START)!r}])")
        lines.append(f"server.wait(name='port', port={self.port})")
        lines.append(
            "server.shell(name='health', commands=["
            f"'python3 -c \"import urllib.request; urllib.request.urlopen(\\'http://127.0.0.1:{self.port}/app.conf\\', timeout=5)\"'])"
        )
        (work / "deploy.py").write_text("\n".join(lines) + "\n")
        return [
            shutil.which("pyinfra") or "pyinfra",
            str(work / "inventory.py"),
            str(work / "deploy.py"),
            "-y",
        ]

    # -- the floor -------------------------------------------------------

    def floor_command(self) -> list[str]:
        return [
            sys.executable,
            __file__,
            "floor",
            "--port",
            str(self.server.port),
            "--key",
            str(self.key.private),
            "--host-key",
            self.server.host_key.public_key,
            "--target",
            str(self.target),
            "--files",
            str(self.files),
            "--service-port",
            str(self.port),
        ]


def run_floor(args: argparse.Namespace) -> None:
    """One connection, one SFTP session, one exec or put per step, TCP_NODELAY; no checks."""
    import base64

    import jinja2
    import paramiko

    client = paramiko.SSHClient()
    kind, blob = args.host_key.split()[:2]
    client.get_host_keys().add(
        f"[{ADDRESS}]:{args.port}",
        kind,
        paramiko.PKey.from_type_string(kind, base64.b64decode(blob)),
    )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        ADDRESS,
        port=args.port,
        username=BENCH_USER,
        key_filename=args.key,
        look_for_keys=False,
        allow_agent=False,
    )
    transport = client.get_transport()
    assert transport is not None
    transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    target = args.target
    port = args.service_port

    def run(command: str) -> None:
        channel = transport.open_session()
        channel.exec_command(command)
        channel.recv_exit_status()
        channel.close()

    sftp = client.open_sftp()
    run(f"mkdir -p {target} && chmod 0755 {target}")
    for index in range(1, 6):
        sftp.put(f"{args.files}/f{index}.bin", f"{target}/f{index}.bin")
    context = {"app_name": "bench", "port": port, "target": target}
    for name in ("conf", "env"):
        text = jinja2.Template(
            Path(f"{args.files}/app.{name}.j2").read_text(), keep_trailing_newline=True
        ).render(context)
        with sftp.open(f"{target}/app.{name}", "w") as out:
            out.write(text)
    for argv in COMMANDS:
        run(" ".join(a.replace("{T}", target) for a in argv))
    run(f"mkdir -p {target}/run")
    run(START.replace("{T}", target).replace("{P}", str(port)))
    run(f"while ! grep -qi ':{port:04X} 00000000:0000 0A' /proc/net/tcp; do sleep 0.02; done")
    run(
        f"python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/app.conf', timeout=5)\""
    )
    sftp.close()
    client.close()


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return elapsed


def openssh_version() -> str:
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    return (done.stderr or done.stdout).strip() or "OpenSSH"


def version(argv: list[str]) -> str:
    try:
        return (
            subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
            .stdout.strip()
            .splitlines()[0]
        )
    except (OSError, IndexError):
        return "not installed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    floor = sub.add_parser("floor")
    for flag in ("--port", "--service-port"):
        floor.add_argument(flag, type=int, required=True)
    for flag in ("--key", "--host-key", "--target", "--files"):
        floor.add_argument(flag, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tools", default="exitplan,ansible,ansible-tuned,pyinfra,floor")
    parser.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    if args.command == "floor":
        run_floor(args)
        return 0
    tools = [t for t in args.tools.split(",") if t]
    root = Path(tempfile.mkdtemp(prefix="exitplan-bench-replay-"))
    root.chmod(0o755)
    made_user = (
        subprocess.run(
            ["getent", "passwd", BENCH_USER], capture_output=True, check=False
        ).returncode
        != 0
    )
    if made_user:
        subprocess.run(
            [
                "useradd",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                str(root / "home"),
                "--shell",
                "/bin/sh",
                BENCH_USER,
            ],
            check=True,
        )
        # useradd leaves the password "!" (locked), which sshd refuses even for keys.
        subprocess.run(["usermod", "--password", "*", BENCH_USER], check=True)
    (root / "home").mkdir()
    shutil.chown(root / "home", BENCH_USER, BENCH_USER)
    key = generate_key(root / "client" / "id_ed25519")
    server = start_sshd(root / "sshd", ADDRESS, [key.public_line])
    # sshd reads a user's authorized keys as that user.
    (root / "sshd" / "authorized_keys").chmod(0o644)
    started_at = datetime.datetime.now(datetime.UTC)
    try:
        bench = Bench(root, server, key)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        for tool in tools:
            if tool == "exitplan":
                commands[tool] = (bench.setup_exitplan(), bench.env)
            elif tool in ("ansible", "ansible-tuned"):
                commands[tool] = bench.setup_ansible(tool == "ansible-tuned")
            elif tool == "pyinfra":
                commands[tool] = (bench.setup_pyinfra(), bench.env)
            elif tool == "floor":
                commands[tool] = (bench.floor_command(), bench.env)
        times: dict[str, list[float]] = {tool: [] for tool in tools}
        for round_index in range(args.runs):
            for tool in tools:
                bench.reset()
                argv, env = commands[tool]
                if tool.startswith("ansible"):
                    env = {
                        **env,
                        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(root / f"cp-{tool}-{round_index}"),
                    }
                times[tool].append(timed(argv, env, root))
                bench.check()
                print(f"round {round_index + 1} {tool}: {times[tool][-1]:.2f}s", flush=True)
        bench.reset()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        if made_user:
            subprocess.run(["userdel", BENCH_USER], check=False)
    write_results(Path(args.results), tools, times, args, started_at)
    return 0


def write_results(
    path: Path,
    tools: list[str],
    times: dict[str, list[float]],
    args: argparse.Namespace,
    started_at: datetime.datetime,
) -> None:
    floor = statistics.median(times["floor"]) if "floor" in times else None
    rows = []
    for tool in tools:
        median = statistics.median(times[tool])
        ratio = f"{median / floor:.2f}" if floor else ""
        per_step = f"{median / 20 * 1000:.0f}"
        runs = ", ".join(f"{t:.2f}" for t in times[tool])
        rows.append(f"| {tool} | {median:.2f} | {per_step} | {ratio} | {runs} |")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    section = f"""
## Replay

Run {started_at:%Y-%m-%d %H:%M} UTC with `python bench/replay.py --runs {args.runs}` (work tree at {commit}).

A 20-step playbook (a directory, five files of 1 to 50 KiB, two templates,
eight commands, the pidfile's directory, a service start, a port wait, an
HTTP health check) replayed onto one `sshd` on {ADDRESS} with a pinned host
key, into an emptied target with the service stopped, each tool a
subprocess (start-up included). Median of {args.runs} interleaved runs;
`x floor` is the median over the bare one-connection paramiko script's.

| tool | median s | ms / step | x floor | runs (s) |
|---|---|---|---|---|
{chr(10).join(rows)}

- `ansible`: `ansible-playbook` with its defaults (facts gathered, its
  default ControlPersist, no pipelining); `ansible-tuned`: pipelining on,
  ControlPersist, no fact gathering. Each run gets a fresh ControlPath
  directory, so no run reuses another's master connection.
- `floor`: one paramiko connection (TCP_NODELAY set), one SFTP session,
  one exec or put per step, nothing checked or journaled.
- exitplan checks every step before and after it acts (a file is hashed on
  the host after it is written), journals each step durably, and reads the
  host's facts only for steps that use them.

Versions: {version([sys.executable, "--version"])}; {version(["ansible-playbook", "--version"])};
{version(["pyinfra", "--version"])}; paramiko {__import__("paramiko").__version__};
{openssh_version()}. Machine: {os.cpu_count()} cores, {platform.platform()}, load average at the end
{", ".join(f"{x:.2f}" for x in os.getloadavg())}.
"""
    text = path.read_text() if path.exists() else ""
    marker = "\n## Replay\n"
    if marker in text:
        head, _, rest = text.partition(marker)
        following = rest.find("\n## ")
        text = head + section + (rest[following:] if following >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n" + section
    path.write_text(text)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
