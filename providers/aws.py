"""The source side: an AWS account reached through boto3.

One ``AwsAccount`` hands out boto3 clients, cached per (service, region) and
safe to share between threads. Tests and the sandbox point it at moto with
``endpoint_url``; S3 then uses path-style addressing, since virtual-host style
would make the client look up ``bucket.127.0.0.1`` in outside DNS.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers

from orchestrator.errors import ConfigError, RetryableError
from orchestrator.export.iam_policy import name_missing_permission

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Error codes AWS uses for throttling and passing server trouble.
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
    }
)


#: STS's answers that mean the credentials themselves were refused.
_CREDENTIALS_REFUSED = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "UnrecognizedClientException",
        "AuthFailure",
    }
)


def should_retry(exc: BaseException) -> bool:
    """Whether a failed AWS call may succeed if made again (the provider's one retry rule)."""
    if isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.IncompleteReadError
        | botocore.exceptions.ResponseStreamingError
        | ConnectionResetError
        | TimeoutError,
    ):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _RETRYABLE_CODES or status >= 500
    return False


def call_aws(what: str, fn: Callable[[], T]) -> T:
    """Call ``fn``; a failure worth retrying becomes RetryableError naming ``what``."""
    try:
        return fn()
    except Exception as exc:
        if should_retry(exc):
            raise RetryableError(f"{what}: {exc}") from exc
        raise


class AwsAccount:
    """Read access to one AWS account in the given regions."""

    def __init__(
        self,
        *,
        regions: Sequence[str],
        profile: str | None = None,
        endpoint_url: str | None = None,
        max_pool_connections: int = 64,
        direct_http: bool | None = None,
    ) -> None:
        if not regions:
            raise ConfigError("source.aws.regions is empty: name at least one region")
        self.regions = tuple(regions)
        self.profile = profile
        self.endpoint_url = endpoint_url
        self.max_pool_connections = max_pool_connections
        #: Whether the hot GETs may bypass botocore's HTTP layer (providers.s3_reader).
        #: Never for moto in this process: it lives in botocore's HTTP layer, and
        #: a GET around it would leave the machine. By default: only when an
        #: endpoint is named; real AWS opts in (orchestrator.run.commands).
        self.direct_http = endpoint_url is not None if direct_http is None else direct_http
        self._reader: Any = None
        self._config = botocore.config.Config(
            max_pool_connections=max_pool_connections,
            retries={"mode": "standard", "max_attempts": 5},
            s3={"addressing_style": "path"},
            connect_timeout=10,
            read_timeout=60,
        )
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        try:
            self._session = boto3.session.Session(profile_name=profile)
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigError(
                f"source.aws.profile: AWS profile {profile!r} is not in your AWS config; "
                "name an existing profile or remove the key to use the default chain"
            ) from exc

    @staticmethod
    def should_retry(exc: BaseException) -> bool:
        """This provider's retry rule (``should_retry``): what the transfer engine is given."""
        return should_retry(exc)

    @property
    def home_region(self) -> str:
        return self.regions[0]

    def client(self, service: str, region: str | None = None) -> Any:
        """A boto3 client for ``service`` in ``region`` (default: the first region)."""
        with self._lock:
            return self.client_unlocked(service, region)

    def client_unlocked(self, service: str, region: str | None = None) -> Any:
        key = (service, region or self.home_region)
        client = self._clients.get(key)
        if client is None:
            client = self._session.client(
                service,
                region_name=key[1],
                endpoint_url=self.endpoint_url,
                config=self._config,
            )
            # A refused call then says which IAM action was missing, in every report.
            client.meta.events.register("after-call", name_missing_permission)
            self._clients[key] = client
        return client

    def s3_reader(self) -> Any:
        """The account's ``providers.s3_reader.S3Reader``, or None when ``direct_http`` is off."""
        if not self.direct_http:
            return None
        with self._lock:
            if self._reader is None:
                from providers.s3_reader import S3Reader

                credentials = self._session.get_credentials()
                if credentials is None:
                    raise ConfigError(
                        "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY, or name a profile in source.aws.profile"
                    )
                self._reader = S3Reader(
                    self.client_unlocked("s3"),
                    credentials=credentials,
                    max_connections=self.max_pool_connections,
                )
            return self._reader

    def check_credentials(self) -> None:
        """Raise ConfigError, naming the fix, unless the source answers to our credentials.

        One STS GetCallerIdentity: it needs no permission, so it proves the
        credentials and the endpoint without touching anything else.
        """
        if self._session.get_credentials() is None:
            raise ConfigError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or name a profile in source.aws.profile"
            )
        where = self.endpoint_url or "AWS"
        try:
            self.client("sts", self.regions[0]).get_caller_identity()
        except botocore.exceptions.EndpointConnectionError:
            raise ConfigError(
                f"cannot reach the source at {where}: check source.aws.endpoint_url and the "
                "network, then run the command again"
            ) from None
        except botocore.parsers.ResponseParserError:
            if not self.endpoint_url:
                raise
            # Not an STS answer at all (s3rver says "Not Found" in plain text).
            log.debug("no STS at %s: credentials not checked up front", where)
            return
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if self.endpoint_url and code not in _CREDENTIALS_REFUSED:
                # An S3-compatible endpoint without STS (s3rver, MinIO) answers
                # something else: it has not judged the credentials, the first
                # real call will.
                log.debug("no STS at %s (%s): credentials not checked up front", where, code)
                return
            raise ConfigError(
                f"the source at {where} refused the credentials ({code}): check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or source.aws.profile"
            ) from None

    def describe(self) -> str:
        where = self.endpoint_url or "aws"
        return f"aws account via {where} in {', '.join(self.regions)}"
