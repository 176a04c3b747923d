"""S3 settings resolution and the translation of botocore failures into clear errors."""

from __future__ import annotations

import botocore.exceptions
import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import (
    S3Settings,
    make_s3_client,
    s3_errors,
)


def params(**given):
    base = {name: None for name in S3Settings.__dataclass_fields__}
    base.update(addressing_style="path", validate_certs=True, max_attempts=5, connect_timeout=10.0, read_timeout=60.0)
    base.update(given)
    return base


def test_module_params_win_over_environment():
    env = {"AWS_ACCESS_KEY_ID": "envkey", "AWS_SECRET_ACCESS_KEY": "envsecret", "AWS_ENDPOINT_URL": "http://env:1"}
    settings = S3Settings.from_params(params(access_key="paramkey", secret_key="paramsecret"), env)
    assert (settings.access_key, settings.secret_key) == ("paramkey", "paramsecret")
    assert settings.endpoint_url == "http://env:1"


def test_environment_fallbacks_in_documented_order():
    env = {"AWS_ENDPOINT_URL": "http://generic:1", "AWS_ENDPOINT_URL_S3": "http://s3:1", "AWS_DEFAULT_REGION": "eu-west-1"}
    settings = S3Settings.from_params(params(), env)
    assert settings.endpoint_url == "http://s3:1"
    assert settings.region == "eu-west-1"
    assert S3Settings.from_params(params(), {}).region == "us-east-1"


def test_secret_is_not_in_repr():
    settings = S3Settings.from_params(params(access_key="AKIAEXAMPLE", secret_key="s3cr3t-value"), {})
    assert "s3cr3t-value" not in repr(settings)


@pytest.mark.parametrize(
    "given, needle",
    [
        ({"access_key": "only-key"}, "Only one of access_key and secret_key is set"),
        ({"endpoint_url": "s3.example.net"}, "is not an http(s) URL"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ],
)
def test_bad_settings_are_explained(given, needle):
    with pytest.raises(MigrationError) as err:
        S3Settings.from_params(params(**given), {})
    assert needle in err.value.message


def test_client_uses_path_style_endpoint_and_retry_settings():
    settings = S3Settings.from_params(params(endpoint_url="http://127.0.0.1:9", access_key="k" * 8, secret_key="s" * 8, max_attempts=3), {})
    client = make_s3_client(settings)
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.config.s3["addressing_style"] == "path"
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}


def client_error(code, status=400):
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(
    "raised, needle, fix",
    [
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
            "Could not reach the S3 endpoint http://127.0.0.1:9",
            "storage server is up",
        ),
        (client_error("NoSuchBucket", 404), "Bucket 'backups' does not exist", "create the bucket"),
        (client_error("InvalidAccessKeyId", 403), "refused the credentials (InvalidAccessKeyId)", "check access_key"),
        (client_error("SignatureDoesNotMatch", 403), "refused the credentials (SignatureDoesNotMatch)", "check access_key"),
        (botocore.exceptions.NoCredentialsError(), "No S3 credentials were found", "set access_key and secret_key"),
        (client_error("SlowDown", 503), "S3 failed while writing x", "run again"),
    ],
)
def test_botocore_failures_become_clear_errors(raised, needle, fix):
    settings = S3Settings.from_params(params(endpoint_url="http://127.0.0.1:9"), {})
    with pytest.raises(MigrationError) as err:
        with s3_errors(settings, "writing x", "backups", "the latest entry is unchanged"):
            raise raised
    assert needle in err.value.problem
    assert fix in err.value.fix
    assert "the latest entry is unchanged" in err.value.problem


def test_unrelated_exceptions_pass_through():
    settings = S3Settings.from_params(params(), {})
    with pytest.raises(KeyError):
        with s3_errors(settings, "x", "b"):
            raise KeyError("bug")


def test_server_side_encryption_is_asked_of_every_write():
    assert S3Settings().write_args() == {}
    assert S3Settings(sse="AES256").write_args() == {"ServerSideEncryption": "AES256"}
    assert S3Settings(sse="aws:kms", sse_kms_key_id="alias/backups").write_args() == {
        "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/backups"}
    with pytest.raises(MigrationError, match="use AES256 or aws:kms"):
        S3Settings.from_params({"sse": "aes"})
    with pytest.raises(MigrationError, match="set sse to aws:kms"):
        S3Settings.from_params({"sse": "AES256", "sse_kms_key_id": "alias/backups"})
