# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small S3 client in the standard library, for programs that run where boto3 is not.

The node backup agent runs on every worker and control-plane node, which have Python but not
boto3. It still has to write the backup catalog exactly as the modules do, so this client
offers the few calls CatalogStore makes, with boto3's names and answer shapes (path-style
addressing, AWS Signature Version 4). Errors carry a boto3-shaped ``response`` so the same
error handling (s3_client.s3_errors) reads them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import os
import random
import socket
import ssl
import time
import typing as t
import urllib.parse
import xml.etree.ElementTree as ET

_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_RETRY_STATUS = {500, 502, 503, 504}


class S3ResponseError(Exception):
    """The server answered with an error; ``response`` is shaped like botocore's ClientError."""

    def __init__(self, status: int, code: str, message: str, operation: str) -> None:
        super().__init__("%s failed: %s %s (%s)" % (operation, status, code, message))
        self.response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}


class S3ConnectionError(OSError):
    """The server could not be reached (after the retries)."""


class _FileBody(t.NamedTuple):
    """A request body read from a file at send time (and again on a retry)."""

    path: str
    size: int
    sha256: str


class _Body:
    """The ``Body`` of a get_object answer (boto3's StreamingBody has ``read``)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        chunk = self._data[self._offset:end]
        self._offset += len(chunk)
        return chunk


def _quote(text: str, safe: str = "/") -> str:
    return urllib.parse.quote(text, safe=safe + "-_.~")


_SSE_HEADERS = {"ServerSideEncryption": "x-amz-server-side-encryption", "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id"}


def _sse_headers(encryption: t.Mapping[str, str]) -> dict[str, str]:
    """boto3's encryption arguments as the request headers they become (signed with the rest)."""
    unknown = sorted(set(encryption) - set(_SSE_HEADERS))
    if unknown:
        raise TypeError("unexpected arguments: %s" % ", ".join(unknown))
    return {_SSE_HEADERS[name]: value for name, value in encryption.items() if value}


class SigV4Client:
    """S3 over http(s) with SigV4, path-style, retries with full jitter on 5xx and connection errors."""

    def __init__(
        self,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        session_token: str | None = None,
        max_attempts: int = 5,
        timeout: float = 60.0,
        ca_bundle: str | None = None,
        validate_certs: bool = True,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("endpoint_url %r is not an http(s) URL" % endpoint_url)
        self.endpoint_url = endpoint_url.rstrip("/")
        self._scheme, self._netloc, self._host = parts.scheme, parts.netloc, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._access_key, self._secret_key, self._token = access_key, secret_key, session_token
        self.region = region
        self.max_attempts = max(1, max_attempts)
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=ca_bundle)
            if not validate_certs:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    # -- signing ----------------------------------------------------------------------

    def _sign(self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], payload_hash: str) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers.update({"host": self._netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
        if self._token:
            headers["x-amz-security-token"] = self._token
        signed = sorted(headers)
        canonical = "\n".join(
            [
                method,
                _quote(path),
                "&".join("%s=%s" % (_quote(k, ""), _quote(v, "")) for k, v in sorted(query)),
                "".join("%s:%s\n" % (name, " ".join(headers[name].split())) for name in signed),
                ";".join(signed),
                payload_hash,
            ]
        )
        scope = "%s/%s/s3/aws4_request" % (day, self.region)
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self._secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
            self._access_key, scope, ";".join(signed), signature)

    # -- transport --------------------------------------------------------------------

    def _request(
        self,
        operation: str,
        method: str,
        bucket: str,
        key: str = "",
        query: list[tuple[str, str]] | None = None,
        body: t.Union[bytes, _FileBody] = b"",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        path = "/" + bucket + ("/" + key if key else "")
        query = query or []
        if isinstance(body, _FileBody):
            payload_hash = body.sha256
        else:
            payload_hash = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
        for attempt in range(1, self.max_attempts + 1):
            sent = {k.lower(): v for k, v in (headers or {}).items()}
            self._sign(method, path, query, sent, payload_hash)
            target = _quote(path) + ("?" + "&".join("%s=%s" % (_quote(k, ""), _quote(v, "")) for k, v in query) if query else "")
            try:
                status, answer_headers, data = self._send(method, target, body, sent)
            except (OSError, http.client.HTTPException) as err:
                if attempt == self.max_attempts:
                    raise S3ConnectionError("Could not connect to %s%s: %s" % (self.endpoint_url, path, err)) from err
            else:
                if status < 300 or status == 304:
                    return status, answer_headers, data
                if status not in _RETRY_STATUS or attempt == self.max_attempts:
                    raise self._error(status, data, operation)
            # Full jitter: sleep a random time up to an exponentially growing cap.
            time.sleep(random.uniform(0, min(20.0, 0.2 * 2 ** attempt)))
        raise AssertionError("unreachable")

    def _send(self, method: str, target: str, body: t.Union[bytes, _FileBody], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self._scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            if isinstance(body, _FileBody):
                with open(body.path, "rb") as stream:  # streamed: snapshots can be gigabytes
                    conn.request(method, target, body=stream, headers=dict(headers, **{"content-length": str(body.size)}))
                    answer = conn.getresponse()
            else:
                conn.request(method, target, body=body or None, headers=dict(headers, **{"content-length": str(len(body))}))
                answer = conn.getresponse()
            data = answer.read()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data
        except socket.timeout as err:
            raise OSError("timed out after %ss" % self.timeout) from err
        finally:
            conn.close()

    @staticmethod
    def _error(status: int, data: bytes, operation: str) -> S3ResponseError:
        code, message = str(status), http.client.responses.get(status, "")
        try:
            root = ET.fromstring(data) if data else None
        except ET.ParseError:
            root = None
        if root is not None:
            code = root.findtext("Code") or code
            message = root.findtext("Message") or message
        return S3ResponseError(status, code, message, operation)

    # -- the boto3-shaped calls CatalogStore makes --------------------------------------

    def head_bucket(self, Bucket: str) -> dict[str, t.Any]:  # noqa: N803 - boto3's names
        self._request("HeadBucket", "HEAD", Bucket)
        return {}

    def head_object(self, Bucket: str, Key: str) -> dict[str, t.Any]:  # noqa: N803
        headers = self._request("HeadObject", "HEAD", Bucket, Key)[1]
        return {"ContentLength": int(headers.get("content-length", 0)), "ETag": headers.get("etag", "")}

    def get_object(self, Bucket: str, Key: str) -> dict[str, t.Any]:  # noqa: N803
        headers, data = self._request("GetObject", "GET", Bucket, Key)[1:]
        return {"Body": _Body(data), "ContentLength": len(data), "ETag": headers.get("etag", "")}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str = "application/octet-stream",  # noqa: N803
                   **encryption: str) -> dict[str, t.Any]:
        headers = self._request("PutObject", "PUT", Bucket, Key, body=Body, headers={"content-type": ContentType, **_sse_headers(encryption)})[1]
        return {"ETag": headers.get("etag", "")}

    def upload_file(self, Filename: str, Bucket: str, Key: str, Sha256: str, **encryption: str) -> dict[str, t.Any]:  # noqa: N803
        """Stream a file to ``Key``; ``Sha256`` (hex) is signed as the payload hash (AWS S3 checks it; rclone does not)."""
        body = _FileBody(Filename, os.path.getsize(Filename), Sha256)
        headers = self._request("PutObject", "PUT", Bucket, Key, body=body,
                                headers={"content-type": "application/octet-stream", **_sse_headers(encryption)})[1]
        return {"ETag": headers.get("etag", "")}

    def copy_object(self, Bucket: str, Key: str, CopySource: t.Mapping[str, str], **encryption: str) -> dict[str, t.Any]:  # noqa: N803
        source = "/%s/%s" % (CopySource["Bucket"], _quote(CopySource["Key"]))
        data = self._request("CopyObject", "PUT", Bucket, Key, headers={"x-amz-copy-source": source, **_sse_headers(encryption)})[2]
        # S3 may answer 200 with an error document when a copy fails part-way.
        if b"<Error>" in data:
            raise self._error(500, data, "CopyObject")
        return {}

    def delete_object(self, Bucket: str, Key: str) -> dict[str, t.Any]:  # noqa: N803
        self._request("DeleteObject", "DELETE", Bucket, Key)
        return {}

    def delete_objects(self, Bucket: str, Delete: t.Mapping[str, t.Any]) -> dict[str, t.Any]:  # noqa: N803
        root = ET.Element("Delete")
        ET.SubElement(root, "Quiet").text = "true" if Delete.get("Quiet") else "false"
        for item in Delete["Objects"]:
            ET.SubElement(ET.SubElement(root, "Object"), "Key").text = item["Key"]
        body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # required by the API, not for security
        data = self._request("DeleteObjects", "POST", Bucket, query=[("delete", "")], body=body, headers={"content-md5": md5})[2]
        errors = [{"Key": e.findtext(_S3_NS + "Key"), "Code": e.findtext(_S3_NS + "Code")} for e in ET.fromstring(data).iter(_S3_NS + "Error")]
        return {"Errors": errors} if errors else {}

    def get_paginator(self, operation: str) -> "_ListPaginator":
        if operation != "list_objects_v2":
            raise NotImplementedError(operation)
        return _ListPaginator(self)

    def list_objects_v2(self, Bucket: str, Prefix: str = "", Delimiter: str = "", ContinuationToken: str = "") -> dict[str, t.Any]:  # noqa: N803
        query = [("list-type", "2"), ("prefix", Prefix)]
        if Delimiter:
            query.append(("delimiter", Delimiter))
        if ContinuationToken:
            query.append(("continuation-token", ContinuationToken))
        root = ET.fromstring(self._request("ListObjectsV2", "GET", Bucket, query=query)[2])
        page: dict[str, t.Any] = {
            "Contents": [
                {
                    "Key": item.findtext(_S3_NS + "Key"),
                    "Size": int(item.findtext(_S3_NS + "Size") or 0),
                    "LastModified": dt.datetime.fromisoformat((item.findtext(_S3_NS + "LastModified") or "").replace("Z", "+00:00")),
                }
                for item in root.iter(_S3_NS + "Contents")
            ],
            "CommonPrefixes": [{"Prefix": p.findtext(_S3_NS + "Prefix")} for p in root.iter(_S3_NS + "CommonPrefixes")],
            "IsTruncated": root.findtext(_S3_NS + "IsTruncated") == "true",
        }
        if page["IsTruncated"]:
            page["NextContinuationToken"] = root.findtext(_S3_NS + "NextContinuationToken")
        return page


class _ListPaginator:
    def __init__(self, client: SigV4Client) -> None:
        self._client = client

    def paginate(self, **kwargs: t.Any) -> t.Iterator[dict[str, t.Any]]:
        token = ""
        while True:
            page = self._client.list_objects_v2(ContinuationToken=token, **kwargs)
            yield page
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]
