"""The up-front credentials check (STS GetCallerIdentity) against endpoints that are not AWS.

An S3-compatible source (s3rver, MinIO) has no STS: what it answers is no verdict
on the credentials, and the export must go on. An STS that refuses the key is one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.errors import ConfigError
from providers.aws import AwsAccount

REFUSED = (
    b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
    b"<Type>Sender</Type><Code>InvalidClientTokenId</Code>"
    b"<Message>The security token included in the request is invalid.</Message>"
    b"</Error><RequestId>1</RequestId></ErrorResponse>"
)


def serve(status: int, body: bytes, content_type: str) -> Iterator[str]:
    class Answer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_sts() -> Iterator[str]:
    """What s3rver answers to an STS call: 404, "Not Found" in plain text."""
    yield from serve(404, b"Not Found", "text/plain")


@pytest.fixture
def refusing_sts() -> Iterator[str]:
    yield from serve(403, REFUSED, "text/xml")


def test_an_endpoint_without_sts_does_not_stop_the_export(no_sts, fake_aws_credentials):
    AwsAccount(regions=["us-east-1"], endpoint_url=no_sts).check_credentials()


def test_credentials_refused_by_sts_are_bad_input_naming_the_fix(
    refusing_sts, fake_aws_credentials
):
    with pytest.raises(ConfigError, match="refused the credentials") as refused:
        AwsAccount(regions=["us-east-1"], endpoint_url=refusing_sts).check_credentials()
    assert "InvalidClientTokenId" in str(refused.value)
    assert "AWS_ACCESS_KEY_ID" in str(refused.value)
