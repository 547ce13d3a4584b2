"""S3 GETs without botocore's per-request machinery: the export's hot path.

For every call botocore resolves the endpoint through its rules engine,
validates parameters, runs event hooks and parses every header: about two
milliseconds of CPU per request, more than a small object costs to copy. The
export makes one GET per object, a hundred thousand times over, so this
module keeps only what a GET needs: each bucket's URL is resolved once
*through botocore* (so virtual-host or path style, custom endpoints and
regions come out as botocore would have them), every request is signed by
botocore's own SigV4 signer, and it is sent through one urllib3 pool.

Errors keep the engine's vocabulary: throttling and server trouble are
``ThrottledError`` / ``RetryableError`` (with Retry-After when S3 gives one),
a changed or missing object is a ``FatalError``.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import DEFAULT_CA_BUNDLE

from orchestrator.errors import FatalError, RetryableError
from orchestrator.export.iam_policy import denied_message, is_access_denied

_CODE = re.compile(rb"<Code>([^<]+)</Code>")


class ThrottledError(RetryableError):
    """S3 asked us to slow down (503 SlowDown) or failed for a moment (5xx)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class S3Response:
    """One GET's status, the headers the export reads, and its streamed body."""

    #: Response header -> the key boto3 would give it, for the ones we check.
    _HEADERS = {
        "etag": "ETag",
        "content-length": "ContentLength",
        "x-amz-version-id": "VersionId",
        "x-amz-checksum-crc32": "ChecksumCRC32",
        "x-amz-checksum-sha256": "ChecksumSHA256",
        "x-amz-checksum-type": "ChecksumType",
        "x-amz-server-side-encryption": "ServerSideEncryption",
        "x-amz-server-side-encryption-customer-algorithm": "SSECustomerAlgorithm",
    }

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self.headers: dict[str, Any] = {}
        for header, name in self._HEADERS.items():
            value = response.headers.get(header)
            if value is not None:
                self.headers[name] = int(value) if name == "ContentLength" else value

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        yield from self._response.stream(size)

    def close(self) -> None:
        self._response.release_conn()


class S3Reader:
    """GetObject for one account, thread-safe, one connection pool for all buckets."""

    def __init__(self, client: Any, *, credentials: Any, max_connections: int = 64) -> None:
        self._client = client
        self._credentials = credentials
        self._region = client.meta.region_name
        ca_bundle = os.environ.get("AWS_CA_BUNDLE") or DEFAULT_CA_BUNDLE
        self._pool = urllib3.PoolManager(
            num_pools=16,
            maxsize=max_connections,
            retries=False,
            timeout=urllib3.Timeout(connect=10, read=60),
            ca_certs=ca_bundle,
        )
        self._lock = threading.Lock()
        self._bucket_urls: dict[str, str] = {}

    def _bucket_url(self, bucket: str) -> str:
        """The URL prefix of the bucket's objects, as botocore builds it (once per bucket)."""
        with self._lock:
            url = self._bucket_urls.get(bucket)
        if url is None:
            probe_key = "exitplan-probe"
            presigned = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": probe_key}, ExpiresIn=60
            )
            url = presigned.split("?", 1)[0][: -len(probe_key)]
            with self._lock:
                self._bucket_urls[bucket] = url
        return url

    def get(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        if_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> S3Response:
        """GET an object (a version, only if its ETag still matches, a byte range).

        Raises ThrottledError/RetryableError for what a retry may fix and
        FatalError for what it will not (gone, changed, forbidden). The
        caller closes the response.
        """
        url = self._bucket_url(bucket) + urllib.parse.quote(key, safe="/~")
        if version_id:
            url += "?versionId=" + urllib.parse.quote(version_id, safe="")
        headers = {"x-amz-checksum-mode": "ENABLED"}
        if if_match:
            headers["If-Match"] = if_match
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        request = AWSRequest(method="GET", url=url, headers=headers)
        S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(
            request
        )
        response = self._pool.request(
            "GET", url, headers=dict(request.headers.items()), preload_content=False
        )
        if response.status in (200, 206):
            return S3Response(response)
        body = response.read(64 * 1024)
        response.release_conn()
        raise _error(
            response.status, body, response.headers, f"s3://{bucket}/{key}", bool(version_id)
        )


def _error(
    status: int, body: bytes, headers: Mapping[str, str], name: str, versioned: bool = False
) -> Exception:
    match = _CODE.search(body)
    code = match.group(1).decode(errors="replace") if match else f"HTTP {status}"
    if is_access_denied(code if match else "", status):
        message = denied_message(
            "s3",
            "GetObject",
            versioned=versioned,
            detail=f"{code} ({status})",
            reason_given=match is not None,
        )
        return FatalError(f"{name}: {message}")
    if status == 503 or status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError"):
        try:
            retry_after = float(headers.get("Retry-After", ""))
        except ValueError:
            retry_after = None
        return ThrottledError(f"{name}: {code} ({status})", retry_after)
    if status == 412:
        return FatalError(
            f"{name} changed after it was listed ({code}); run the export again to copy the new version"
        )
    if status in (403, 404):
        return FatalError(f"{name}: {code} ({status})")
    return FatalError(f"{name}: {code} ({status})")
