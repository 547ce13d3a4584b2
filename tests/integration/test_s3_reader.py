"""The direct S3 reader against a moto server: what the export's hot path relies on."""

from __future__ import annotations

import pytest

from orchestrator.errors import FatalError
from providers.aws import AwsAccount

BUCKET = "reader-test"


@pytest.fixture(scope="module")
def account(moto_endpoint: str) -> AwsAccount:
    account = AwsAccount(regions=["us-east-1"], endpoint_url=moto_endpoint)
    s3 = account.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return account


def read(response) -> bytes:
    try:
        return b"".join(response.iter_chunks(1024))
    finally:
        response.close()


def test_get_whole_ranged_and_by_version_with_checksum_headers(account):
    s3 = account.client("s3")
    first = s3.put_object(Bucket=BUCKET, Key="dir/a b+c.txt", Body=b"first version")
    s3.put_object(Bucket=BUCKET, Key="dir/a b+c.txt", Body=b"second version!")
    reader = account.s3_reader()
    latest = reader.get(BUCKET, "dir/a b+c.txt")
    assert latest.headers["ContentLength"] == 15
    assert "ChecksumCRC32" in latest.headers and latest.headers["ETag"].startswith('"')
    assert read(latest) == b"second version!"
    assert read(reader.get(BUCKET, "dir/a b+c.txt", byte_range=(7, 13))) == b"version"
    old = reader.get(BUCKET, "dir/a b+c.txt", version_id=first["VersionId"])
    assert read(old) == b"first version"


def test_a_changed_or_missing_object_is_a_clear_fatal_error(account):
    s3 = account.client("s3")
    s3.put_object(Bucket=BUCKET, Key="moving.bin", Body=b"now")
    reader = account.s3_reader()
    with pytest.raises(FatalError, match="changed after it was listed"):
        reader.get(BUCKET, "moving.bin", if_match='"0123456789abcdef0123456789abcdef"')
    with pytest.raises(FatalError, match="NoSuchKey"):
        reader.get(BUCKET, "never-there.bin")


def test_in_process_accounts_never_read_around_botocore():
    """moto in this process lives in botocore's HTTP layer: a direct GET would leave the machine."""
    assert AwsAccount(regions=["us-east-1"]).s3_reader() is None
