"""A moto server that enforces IAM, in a process of its own, on 127.0.0.1.

moto checks a request's signature and the caller's IAM policies only after
``INITIAL_NO_AUTH_ACTION_COUNT`` unauthenticated actions, a process-wide
setting. Turning it on in this process would make every in-process moto
(the sandbox, the unit tests) demand real signatures, so the server runs in
a subprocess, started from an environment without that variable (no
enforcement: the sandbox is seeded as it is everywhere else), and
:meth:`EnforcingMoto.enforce` then switches enforcement on through moto's
``/moto-api/reset-auth`` endpoint (what moto's own
``set_initial_no_auth_action_count`` calls in server mode).

Seeding must come first: moto 5.2 cannot check the signature of the EBS
direct APIs (it hashes the parsed parameters as the body of their GETs), so
``ebs:CompleteSnapshot`` could not be called once enforcement is on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config

from tests.support.moto_server import free_port

START_TIMEOUT_S = 30.0
REGION = "us-east-1"
ADMIN_USER = "exitplan-test-admin"


@dataclass(frozen=True)
class Keys:
    """An IAM user's access key."""

    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        """The variables that make boto3 (and exitplan) sign as this user."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": REGION,
        }


@dataclass
class EnforcingMoto:
    url: str
    process: subprocess.Popen[bytes]
    admin: Keys | None = None
    _users: int = field(default=0)

    def client(self, service: str, keys: Keys | None = None) -> Any:
        """A boto3 client signing as ``keys`` (default: the admin once enforcing)."""
        keys = keys or self.admin or Keys("testing", "testing")
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}
            ),
        )

    def enforce(self) -> None:
        """Create an admin user (allowed everything), then make every request prove who it is."""
        iam = self.client("iam")
        iam.create_user(UserName=ADMIN_USER)
        iam.put_user_policy(
            UserName=ADMIN_USER,
            PolicyName="everything",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
        self.admin = Keys(key["AccessKeyId"], key["SecretAccessKey"])
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def user_with_policy(self, document: dict[str, Any], name: str | None = None) -> Keys:
        """A new IAM user holding exactly ``document`` (as a managed policy), and its key."""
        assert self.admin is not None, "call enforce() first"
        self._users += 1
        name = name or f"exitplan-export-{self._users}"
        iam = self.client("iam")
        arn = iam.create_policy(PolicyName=f"{name}-policy", PolicyDocument=json.dumps(document))[
            "Policy"
        ]["Arn"]
        iam.create_user(UserName=name)
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def enforcing_moto_server(log_path: Path) -> Iterator[EnforcingMoto]:
    """A moto server subprocess on 127.0.0.1, not enforcing until ``enforce()``; stopped on exit.

    Its request log goes to ``log_path`` (a pipe nobody reads would fill and stall it).
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"moto server did not start:\n{output}")
            time.sleep(0.05)  # polling the server with a deadline, not synchronising on time
        yield EnforcingMoto(url, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
