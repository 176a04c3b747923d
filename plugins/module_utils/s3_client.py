# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 client factory shared by every module that touches the backup storage.

The storage is any S3-compatible server (AWS S3, Ceph RGW, MinIO, rclone, ...), so the
factory defaults to path-style addressing, lets the caller point at any endpoint, and
turns botocore failures into MigrationError messages that name the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_sigv4 import S3ConnectionError, SigV4Client

try:
    import boto3
    import botocore.config
    import botocore.exceptions

    HAS_BOTO3 = True
except ImportError:  # pragma: no cover - reported by require_boto3()
    HAS_BOTO3 = False

# Environment variables read when a setting is not given, first match wins. These are the
# names boto3, the AWS CLI and amazon.aws already use, so existing setups keep working.
ENV_FALLBACKS: dict[str, tuple[str, ...]] = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_URL"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key": ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"),
    "secret_key": ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"),
    "session_token": ("AWS_SESSION_TOKEN",),
    "profile": ("AWS_PROFILE",),
    "ca_bundle": ("AWS_CA_BUNDLE",),
}

# Server-side encryption of what the collection writes: S3-managed keys, or a KMS key.
SSE_MODES = ("AES256", "aws:kms")

# Ansible argument spec matching doc_fragments/s3.py.
S3_ARG_SPEC: dict[str, dict[str, t.Any]] = dict(
    endpoint_url=dict(type="str", aliases=["s3_url"]),
    region=dict(type="str", aliases=["aws_region"]),
    access_key=dict(type="str", aliases=["aws_access_key_id"], no_log=True),
    secret_key=dict(type="str", aliases=["aws_secret_access_key"], no_log=True),
    session_token=dict(type="str", no_log=True),
    profile=dict(type="str"),
    addressing_style=dict(type="str", choices=["path", "virtual", "auto"], default="path"),
    validate_certs=dict(type="bool", default=True),
    ca_bundle=dict(type="path"),
    max_attempts=dict(type="int", default=5),
    connect_timeout=dict(type="float", default=10.0),
    read_timeout=dict(type="float", default=60.0),
    sse=dict(type="str", choices=list(SSE_MODES)),
    sse_kms_key_id=dict(type="str"),
)


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """Everything needed to talk to the backup storage."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    profile: str | None = None
    addressing_style: str = "path"
    validate_certs: bool = True
    ca_bundle: str | None = None
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    sse: str | None = None
    sse_kms_key_id: str | None = None

    @classmethod
    def from_params(
        cls, params: t.Mapping[str, t.Any], environ: t.Mapping[str, str] | None = None
    ) -> "S3Settings":
        """Settings from module parameters, then the usual environment variables."""
        environ = os.environ if environ is None else environ
        values: dict[str, t.Any] = {}
        for field in dataclasses.fields(cls):
            value = params.get(field.name)
            if value is None:
                value = next(
                    (environ[name] for name in ENV_FALLBACKS.get(field.name, ()) if environ.get(name)),
                    None,
                )
            if value is not None:
                values[field.name] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if (self.access_key is None) != (self.secret_key is None):
            raise MigrationError(
                "Only one of access_key and secret_key is set",
                "give both (or neither, to use the environment, a profile or an instance role)",
            )
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise MigrationError(
                "endpoint_url %r is not an http(s) URL" % self.endpoint_url,
                "write it as https://host:port (or http:// for a local test server)",
            )
        if self.max_attempts < 1:
            raise MigrationError("max_attempts must be at least 1", "set max_attempts to 1 or more")
        if self.sse is not None and self.sse not in SSE_MODES:
            raise MigrationError("sse %r is not a server-side encryption of S3" % self.sse, "use AES256 or aws:kms, or leave it out")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise MigrationError("sse_kms_key_id is set but sse is %r" % self.sse, "set sse to aws:kms to encrypt with that KMS key")

    def write_args(self) -> dict[str, str]:
        """What every object the collection writes carries (boto3's names): the server-side encryption asked for."""
        found = {"ServerSideEncryption": self.sse} if self.sse else {}
        if self.sse_kms_key_id:
            found["SSEKMSKeyId"] = self.sse_kms_key_id
        return found

    @property
    def endpoint_label(self) -> str:
        return self.endpoint_url or "AWS S3 (%s)" % self.region


def require_boto3() -> None:
    if not HAS_BOTO3:
        raise MigrationError(
            "The Python library boto3 is not installed where this module runs",
            "pip install -r requirements.txt from the collection, or use its execution environment",
        )


def make_s3_client(settings: S3Settings) -> t.Any:
    """A boto3 S3 client for ``settings``.

    Retries use botocore's "standard" mode: exponential backoff with full jitter on
    throttling, 5xx and connection errors, up to ``max_attempts`` tries.
    """
    require_boto3()
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        aws_session_token=settings.session_token,
        profile_name=settings.profile,
        region_name=settings.region,
    )
    config = botocore.config.Config(
        s3={"addressing_style": settings.addressing_style},
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        # Newer botocore adds CRC32 trailers to every upload; many S3-compatible servers
        # reject or ignore them. Checksums only where the API requires them: we verify
        # content with our own sha256 anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    verify: bool | str = settings.ca_bundle or settings.validate_certs
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config, verify=verify)


def make_stdlib_s3_client(settings: S3Settings) -> SigV4Client:
    """The standard-library client (s3_sigv4) for ``settings``, for hosts without boto3.

    It needs explicit keys: profiles and instance roles are boto3 features.
    """
    if not settings.access_key or not settings.secret_key:
        raise MigrationError(
            "No S3 access key and secret key were given",
            "set them (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); this client cannot use profiles or instance roles",
        )
    if settings.addressing_style == "virtual":
        raise MigrationError(
            "The standard-library S3 client only does path-style addressing", "set addressing_style to path"
        )
    return SigV4Client(
        settings.endpoint_url or "https://s3.%s.amazonaws.com" % settings.region,
        settings.access_key,
        settings.secret_key,
        region=settings.region,
        session_token=settings.session_token,
        max_attempts=settings.max_attempts,
        timeout=max(settings.connect_timeout, settings.read_timeout),
        ca_bundle=settings.ca_bundle,
        validate_certs=settings.validate_certs,
    )


def _is_connection_error(err: BaseException) -> bool:
    if isinstance(err, S3ConnectionError):
        return True
    return HAS_BOTO3 and isinstance(err, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError))


def error_code(err: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "403",
    "InvalidToken",
    "ExpiredToken",
}


def is_missing(err: BaseException) -> bool:
    return error_code(err) in _MISSING_CODES


@contextlib.contextmanager
def s3_errors(
    settings: S3Settings, doing: str, bucket: str, consequence: str = ""
) -> t.Iterator[None]:
    """Turn botocore (or s3_sigv4) failures raised while ``doing`` into MigrationError.

    ``consequence`` tells the user what state things were left in (for example "the
    latest entry is unchanged"), so a failure never leaves them guessing.
    """
    after = (" " + consequence.rstrip(".")) if consequence else ""
    try:
        yield
    except MigrationError:
        raise
    except Exception as err:  # botocore's exception tree has no common public base
        code = error_code(err)
        if HAS_BOTO3 and isinstance(err, botocore.exceptions.NoCredentialsError):
            raise MigrationError(
                "No S3 credentials were found while %s%s" % (doing, after),
                "set access_key and secret_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "a profile or an instance role)",
            ) from err
        if _is_connection_error(err):
            raise MigrationError(
                "Could not reach the S3 endpoint %s while %s (%s)%s"
                % (settings.endpoint_label, doing, err, after),
                "check that the storage server is up and endpoint_url is right, then run again",
            ) from err
        if code in {"NoSuchBucket"}:
            raise MigrationError(
                "Bucket %r does not exist at %s (while %s)%s"
                % (bucket, settings.endpoint_label, doing, after),
                "create the bucket or correct the bucket name",
            ) from err
        if code in _AUTH_CODES:
            raise MigrationError(
                "The S3 server at %s refused the credentials (%s) while %s%s"
                % (settings.endpoint_label, code, doing, after),
                "check access_key/secret_key (or the AWS_* variables) and their permissions "
                "on bucket %r" % bucket,
            ) from err
        if code or (HAS_BOTO3 and isinstance(err, botocore.exceptions.BotoCoreError)):
            raise MigrationError(
                "S3 failed while %s: %s%s" % (doing, err, after),
                "check the storage server's logs and the settings, then run again",
            ) from err
        raise
