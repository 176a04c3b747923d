# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""kubeadm bootstrap tokens made through the API, and the checks ``kubeadm join`` makes with them.

A bootstrap token is a Secret ``kube-system/bootstrap-token-<id>`` of type
``bootstrap.kubernetes.io/token``; :func:`token_secret` builds it with the fields
``kubeadm token create`` writes (cmd/kubeadm/app/apis/bootstraptoken/v1 encodeTokenSecretData).
The bootstrapsigner controller then signs ``kube-public/cluster-info`` for it: a detached JWS
(HS256, key = the token secret) under ``jws-kubeconfig-<id>``. A joining node trusts the
cluster only if that signature is valid for its token and the CA in cluster-info matches the
pinned ``sha256:<hex>`` of the CA's SubjectPublicKeyInfo (kubeadm's discovery-token-ca-cert-hash).
:func:`detached_jws_valid`, :func:`ca_cert_hash` and :meth:`BootstrapTokens.verify_discovery`
make those same checks here, so a token this module hands out is one a join will accept.

Everything but :class:`BootstrapTokens` is plain Python (standard library and PyYAML, which
ansible-core requires): the CA hash is read from the certificate's DER directly.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import re
import secrets
import ssl
import string
import time
import typing as t
import urllib.error
import urllib.parse
import urllib.request

try:
    import yaml  # ansible-core requires PyYAML, so the controller has it

    HAS_YAML = True
except ImportError:  # pragma: no cover - ansible-test's import check runs without it
    HAS_YAML = False

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

NAMESPACE = "kube-system"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
DEFAULT_GROUP = "system:bootstrappers:kubeadm:default-node-token"
USAGES = ("authentication", "signing")
RUN_ID_LABEL = "migration.hybridcloud.io/run-id"
MANAGED_BY = {"app.kubernetes.io/managed-by": "hybridcloud.migration"}
CLUSTER_INFO_NAMESPACE = "kube-public"
CLUSTER_INFO = "cluster-info"
JWS_PREFIX = "jws-kubeconfig-"
MIN_TTL = 60
MAX_TTL = 3600

_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_TOKEN_ID_RE = re.compile(r"^[a-z0-9]{6}$")
_TOKEN_SECRET_RE = re.compile(r"^[a-z0-9]{16}$")
# cluster-bootstrap's BootstrapGroupPattern: the API server ignores tokens with other groups.
_GROUP_RE = re.compile(r"^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$")
_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL)


# -- tokens --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Token:
    """A bootstrap token. ``str()`` and ``repr()`` never show the secret part."""

    id: str
    secret: str = dataclasses.field(repr=False)

    @property
    def value(self) -> str:
        """``<id>.<secret>``: what ``kubeadm join --token`` takes."""
        return "%s.%s" % (self.id, self.secret)

    @property
    def secret_name(self) -> str:
        return SECRET_PREFIX + self.id

    def __str__(self) -> str:
        return "bootstrap token %s" % self.id


def generate_token() -> Token:
    """A new random token, drawn as kubeadm draws it: 6 + 16 characters of [a-z0-9]."""
    return Token(
        "".join(secrets.choice(_ALPHABET) for _i in range(6)),
        "".join(secrets.choice(_ALPHABET) for _i in range(16)),
    )


def parse_token(value: str) -> Token:
    """``<id>.<secret>`` as a Token. The error never quotes the value: it is a credential."""
    match = _TOKEN_RE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise MigrationError(
            "The token given is not a kubeadm bootstrap token",
            "give it as <id>.<secret>: 6 and 16 characters of a-z and 0-9 (as kubeadm token list shows the id)",
        )
    return Token(match.group(1), match.group(2))


def check_token_id(value: str) -> str:
    if not isinstance(value, str) or not _TOKEN_ID_RE.match(value):
        raise MigrationError(
            "token_id %r is not a bootstrap token id" % (value,),
            "give the 6 characters (a-z, 0-9) before the dot of the token",
        )
    return value


def check_run_id(value: str) -> str:
    if not isinstance(value, str) or not _LABEL_VALUE_RE.match(value):
        raise MigrationError(
            "run_id %r cannot be a Kubernetes label value" % (value,),
            "use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        )
    return value


def check_groups(groups: t.Sequence[str]) -> list[str]:
    bad = [group for group in groups if not _GROUP_RE.match(group)]
    if bad or not groups:
        raise MigrationError(
            "groups %s are not bootstrap token groups" % (", ".join(repr(group) for group in bad) or "[]"),
            "give groups like %s: system:bootstrappers: followed by a-z, 0-9, ':' and '-'" % DEFAULT_GROUP,
        )
    return list(groups)


# -- time ----------------------------------------------------------------------------------


def parse_duration(value: t.Union[str, int], field: str) -> int:
    """Seconds in ``3600``, ``90s``, ``45m``, ``1h`` or a Go duration such as ``1h0m0s``."""
    text = str(value).strip()
    if re.match(r"^[0-9]+$", text):
        return int(text)
    match = _DURATION_RE.match(text)
    if not match or not any(match.groups()):
        raise MigrationError(
            "%s %r is not a duration" % (field, value), "write seconds or a duration such as 45m, 1h or 1h0m0s"
        )
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def check_ttl(ttl: int, reuse_min_ttl: int) -> None:
    if ttl > MAX_TTL:
        raise MigrationError(
            "ttl %s is longer than the 1 hour a bootstrap token may live here" % describe_seconds(ttl),
            "use a ttl of 1h or less: a join takes minutes, and a short-lived token limits what a leaked one allows",
        )
    if ttl < MIN_TTL:
        raise MigrationError(
            "ttl %s is too short for a node to join" % describe_seconds(ttl),
            "use a ttl between 1m and 1h",
        )
    if not 0 <= reuse_min_ttl < ttl:
        raise MigrationError(
            "reuse_min_ttl %s is not shorter than ttl %s, so no token could ever be reused"
            % (describe_seconds(reuse_min_ttl), describe_seconds(ttl)),
            "make reuse_min_ttl shorter than ttl, or leave it out (half of ttl)",
        )


def describe_seconds(seconds: int) -> str:
    if seconds and seconds % 3600 == 0:
        return "%dh" % (seconds // 3600)
    if seconds and seconds % 60 == 0:
        return "%dm" % (seconds // 60)
    return "%ds" % seconds


def rfc3339(when: dt.datetime) -> str:
    """``2026-11-25T19:15:00Z``: Go's time.RFC3339 of the UTC time, as kubeadm writes expirations."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: t.Any) -> dt.datetime | None:
    """The time in an ``expiration`` field, or None when it is not an RFC 3339 time with a zone."""
    if not isinstance(text, str) or "T" not in text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.astimezone(dt.timezone.utc) if when.tzinfo else None


def server_time(date_header: t.Optional[str], fallback: dt.datetime) -> dt.datetime:
    """The API server's clock from an HTTP Date header (tokens expire by that clock), else ``fallback``."""
    if date_header:
        try:
            when = email.utils.parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None and when.tzinfo is not None:
            return when.astimezone(dt.timezone.utc)
    return fallback


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


# -- the Secret ----------------------------------------------------------------------------


def token_secret(
    token: Token,
    expiration: dt.datetime,
    description: str,
    groups: t.Sequence[str],
    run_id: str | None = None,
) -> dict[str, t.Any]:
    """The Secret ``kubeadm token create`` writes (plus our labels), as an API body."""
    data = {
        "token-id": token.id,
        "token-secret": token.secret,
        "expiration": rfc3339(expiration),
        "auth-extra-groups": ",".join(groups),
    }
    if description:
        data["description"] = description
    for usage in USAGES:
        data["usage-bootstrap-" + usage] = "true"
    labels = dict(MANAGED_BY)
    if run_id:
        labels[RUN_ID_LABEL] = run_id
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": token.secret_name, "namespace": NAMESPACE, "labels": labels},
        "type": SECRET_TYPE,
        "data": {key: base64.b64encode(value.encode("utf-8")).decode("ascii") for key, value in data.items()},
    }


@dataclasses.dataclass(frozen=True)
class TokenRecord:
    """A bootstrap token Secret as read from the API."""

    token: Token | None  # None when the Secret holds no well-formed id and secret
    name: str
    expiration: dt.datetime | None
    groups: tuple[str, ...]
    usages: tuple[str, ...]
    description: str
    run_id: str | None

    def seconds_left(self, now: dt.datetime) -> int | None:
        return None if self.expiration is None else int((self.expiration - now).total_seconds())

    def reusable(self, groups: t.Sequence[str], min_seconds_left: int, now: dt.datetime) -> bool:
        """Valid as kubeadm join needs it, for the same groups, with enough time left."""
        left = self.seconds_left(now)
        return (
            self.token is not None
            and self.name == self.token.secret_name
            and set(USAGES) <= set(self.usages)
            and sorted(self.groups) == sorted(groups)
            and left is not None
            and left >= min_seconds_left
        )


def read_token_secret(secret: t.Mapping[str, t.Any]) -> TokenRecord:
    """A TokenRecord from a Secret (a dict as the API returns it, ``data`` base64-encoded)."""
    fields: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            fields[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, TypeError):
            fields[key] = ""
    metadata = secret.get("metadata") or {}
    token_id, token_value = fields.get("token-id", ""), fields.get("token-secret", "")
    well_formed = bool(_TOKEN_ID_RE.match(token_id) and _TOKEN_SECRET_RE.match(token_value))
    return TokenRecord(
        token=Token(token_id, token_value) if well_formed else None,
        name=metadata.get("name", ""),
        expiration=parse_rfc3339(fields.get("expiration")),
        groups=tuple(group for group in fields.get("auth-extra-groups", "").split(",") if group),
        usages=tuple(key[len("usage-bootstrap-"):] for key, value in fields.items() if key.startswith("usage-bootstrap-") and value == "true"),
        description=fields.get("description", ""),
        run_id=(metadata.get("labels") or {}).get(RUN_ID_LABEL),
    )


# -- the CA certificate hash ------------------------------------------------------------------


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the element) of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER element at byte %d" % offset)
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tag at byte %d" % offset)
    start = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise ValueError("indefinite length at byte %d (not DER)" % offset)
    else:
        count = first & 0x7F
        if count > 4 or start + count > len(data):
            raise ValueError("bad length at byte %d" % offset)
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("DER element at byte %d runs past the end" % offset)
    return tag, start, end


def _der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, offset, end) of each element inside a constructed value."""
    children = []
    offset = start
    while offset < end:
        tag, _value, element_end = _der_element(data, offset)
        children.append((tag, offset, element_end))
        offset = element_end
    if offset != end:
        raise ValueError("elements overrun their container")
    return children


def subject_public_key_info(cert_der: bytes) -> bytes:
    """The certificate's SubjectPublicKeyInfo exactly as encoded in it (Go's RawSubjectPublicKeyInfo).

    Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
                                   validity, subject, subjectPublicKeyInfo, ... }
    """
    try:
        tag, start, end = _der_element(cert_der, 0)
        if tag != 0x30 or end != len(cert_der):
            raise ValueError("not a DER SEQUENCE")
        tbs_tag, tbs_start, tbs_end = _der_element(cert_der, start)
        if tbs_tag != 0x30:
            raise ValueError("no tbsCertificate")
        fields = _der_children(cert_der, tbs_start, tbs_end)
        if fields and fields[0][0] == 0xA0:  # explicit version
            fields = fields[1:]
        if len(fields) < 6:
            raise ValueError("tbsCertificate has too few fields")
        spki_tag, spki_offset, spki_end = fields[5]
        _tag, spki_start, _end = _der_element(cert_der, spki_offset)
        parts = _der_children(cert_der, spki_start, spki_end)
        if spki_tag != 0x30 or [part[0] for part in parts] != [0x30, 0x03]:
            raise ValueError("field 7 of tbsCertificate is not a SubjectPublicKeyInfo")
    except ValueError as err:
        raise MigrationError(
            "The CA certificate in cluster-info cannot be read: %s" % err,
            "check the certificate-authority-data of the kubeconfig in kube-public/cluster-info",
        ) from None
    return cert_der[spki_offset:spki_end]


def ca_cert_hash(cert_der: bytes) -> str:
    """``sha256:<hex>`` of the certificate's SubjectPublicKeyInfo: kubeadm's --discovery-token-ca-cert-hash."""
    return "sha256:" + hashlib.sha256(subject_public_key_info(cert_der)).hexdigest()


def pem_certificates(pem: bytes) -> list[bytes]:
    """DER of each CERTIFICATE block, in order."""
    certificates = []
    for block in _PEM_CERT_RE.findall(pem):
        try:
            certificates.append(base64.b64decode(b"".join(block.split()), validate=True))
        except (binascii.Error, ValueError):
            raise MigrationError(
                "A CERTIFICATE block of the CA data in cluster-info is not base64",
                "check the certificate-authority-data of the kubeconfig in kube-public/cluster-info",
            ) from None
    return certificates


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """What ``kube-public/cluster-info`` publishes for joining nodes."""

    kubeconfig: str
    server: str
    ca_pem: bytes
    ca_hashes: tuple[str, ...]
    signatures: t.Mapping[str, str]  # token id -> detached JWS

    @property
    def api_server_endpoint(self) -> str:
        """``host:port`` of the server, as kubeadm join takes it."""
        parsed = urllib.parse.urlsplit(self.server)
        return parsed.netloc or self.server

    def signed_for(self, token: Token) -> bool:
        jws = self.signatures.get(token.id)
        return jws is not None and detached_jws_valid(jws, self.kubeconfig, token)


def parse_cluster_info(data: t.Mapping[str, str] | None) -> ClusterInfo:
    """Read the ConfigMap's data the way kubeadm's discovery reads it."""
    data = data or {}
    text = data.get("kubeconfig")
    fix = "publish cluster-info as kubeadm init does (kubeadm init phase bootstrap-token), with the cluster's server and CA"
    if not text:
        raise MigrationError("The ConfigMap kube-public/cluster-info has no kubeconfig", fix)
    if not HAS_YAML:
        raise MigrationError("The Python library PyYAML is missing where this module runs", "pip install -r requirements.txt")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise MigrationError("The kubeconfig in kube-public/cluster-info is not YAML: %s" % err, fix) from None
    clusters = (config or {}).get("clusters") if isinstance(config, dict) else None
    if not clusters or not isinstance(clusters, list):
        raise MigrationError("The kubeconfig in kube-public/cluster-info names no cluster", fix)
    cluster = (clusters[-1] or {}).get("cluster") or {}  # kubeadm keeps the last one it reads
    server, ca_data = cluster.get("server"), cluster.get("certificate-authority-data")
    if not server or not ca_data:
        raise MigrationError(
            "The kubeconfig in kube-public/cluster-info lacks %s"
            % " and ".join(name for name, value in (("server", server), ("certificate-authority-data", ca_data)) if not value),
            fix,
        )
    try:
        ca_pem = base64.b64decode(ca_data, validate=True)
    except (binascii.Error, ValueError):
        raise MigrationError("The certificate-authority-data in kube-public/cluster-info is not base64", fix) from None
    certificates = pem_certificates(ca_pem)
    if not certificates:
        raise MigrationError("The certificate-authority-data in kube-public/cluster-info holds no PEM certificate", fix)
    signatures = {key[len(JWS_PREFIX):]: value for key, value in data.items() if key.startswith(JWS_PREFIX)}
    return ClusterInfo(text, server, ca_pem, tuple(ca_cert_hash(der) for der in certificates), signatures)


# -- the JWS ----------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def detached_jws(payload: str, token: Token) -> str:
    """cluster-bootstrap's ComputeDetachedSignature: HS256 compact JWS with the payload left out.

    go-jose writes the protected header as compact JSON with sorted keys.
    """
    header = _b64url(json.dumps({"alg": "HS256", "kid": token.id}, separators=(",", ":"), sort_keys=True).encode())
    signing_input = "%s.%s" % (header, _b64url(payload.encode("utf-8")))
    signature = hmac.new(token.secret.encode("ascii"), signing_input.encode("ascii"), hashlib.sha256).digest()
    return "%s..%s" % (header, _b64url(signature))


def detached_jws_valid(jws: str, payload: str, token: Token) -> bool:
    """cluster-bootstrap's DetachedTokenIsValid, the check kubeadm join makes (constant time here)."""
    return hmac.compare_digest(detached_jws(payload, token).encode("ascii"), jws.encode("utf-8"))


# -- the API ----------------------------------------------------------------------------------


class BootstrapTokens:
    """Bootstrap tokens of one cluster, through a kubernetes ``ApiClient``.

    ``where`` names the cluster in messages (never a credential).
    """

    def __init__(
        self,
        api_client: t.Any,
        where: str,
        sleep: t.Callable[[float], None] = time.sleep,
        clock: t.Callable[[], float] = time.monotonic,
    ) -> None:
        import urllib3.exceptions  # pylint: disable=import-outside-toplevel
        from kubernetes import client  # pylint: disable=import-outside-toplevel

        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._api_exception = client.exceptions.ApiException
        self._failures = (client.exceptions.ApiException, urllib3.exceptions.HTTPError)
        self.where = where
        self._sleep = sleep
        self._clock = clock

    def _call(self, doing: str, call: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        """``call(*args, **kwargs)``; None when the object is not found; other failures as MigrationError."""
        try:
            return call(*args, _request_timeout=30, **kwargs)
        except self._failures as err:
            status = getattr(err, "status", None)
            if status == 404:
                return None
            if status in (401, 403):
                fix = (
                    "give the credentials the rights kubeadm's admin has: get, list, create and delete "
                    "Secrets in kube-system, and get ConfigMaps in kube-public"
                )
            elif status == 409:
                fix = "run the task again"
            elif status:
                fix = "check the API server's log for the reason"
            else:
                fix = "check that the API server is up and that the kubeconfig or host points at it"
            reason = ("%s %s" % (status, getattr(err, "reason", "") or "")).strip() if status else str(err)
            raise MigrationError("Could not %s (%s): %s" % (doing, self.where, reason), fix) from None

    def _plain(self, obj: t.Any) -> dict[str, t.Any]:
        plain: dict[str, t.Any] = self._api_client.sanitize_for_serialization(obj)
        return plain

    def cluster_info(self) -> tuple[ClusterInfo, dt.datetime]:
        """cluster-info, and the API server's time when it answered."""
        answer = self._call(
            "read kube-public/cluster-info",
            self._core.read_namespaced_config_map_with_http_info,
            CLUSTER_INFO,
            CLUSTER_INFO_NAMESPACE,
        )
        if answer is None:
            raise MigrationError(
                "The ConfigMap kube-public/cluster-info does not exist (%s), so no node can discover this cluster with a token"
                % self.where,
                "publish it as kubeadm init does (kubeadm init phase bootstrap-token)",
            )
        config_map, _status, headers = answer
        now = server_time((headers or {}).get("Date"), utcnow())
        return parse_cluster_info(config_map.data), now

    def list_tokens(self, run_id: str | None = None) -> list[TokenRecord]:
        listed = self._call(
            "list bootstrap tokens in kube-system",
            self._core.list_namespaced_secret,
            NAMESPACE,
            label_selector="%s=%s" % (RUN_ID_LABEL, run_id) if run_id else None,
            field_selector="type=%s" % SECRET_TYPE,
        )
        return [read_token_secret(self._plain(item)) for item in (listed.items if listed else [])]

    def read_token(self, token_id: str) -> TokenRecord | None:
        name = SECRET_PREFIX + token_id
        secret = self._call("read kube-system/%s" % name, self._core.read_namespaced_secret, name, NAMESPACE)
        if secret is None:
            return None
        plain = self._plain(secret)
        if plain.get("type") != SECRET_TYPE:
            raise MigrationError(
                "kube-system/%s is a Secret of type %s, not a bootstrap token" % (name, plain.get("type")),
                "leave it alone: it was not made by kubeadm or this module",
            )
        return read_token_secret(plain)

    def create(self, body: t.Mapping[str, t.Any]) -> None:
        self._call("create kube-system/%s" % body["metadata"]["name"], self._core.create_namespaced_secret, NAMESPACE, body)

    def delete(self, token_id: str) -> bool:
        """Delete the token's Secret; False when it was gone already."""
        name = SECRET_PREFIX + token_id
        return self._call("delete kube-system/%s" % name, self._core.delete_namespaced_secret, name, NAMESPACE) is not None

    def wait_for_signature(self, token: Token, timeout: float, interval: float = 0.5) -> ClusterInfo:
        """cluster-info once it carries a valid JWS for ``token`` (the bootstrapsigner adds it)."""
        deadline = self._clock() + timeout
        while True:
            info, _now = self.cluster_info()
            if info.signed_for(token):
                return info
            if self._clock() >= deadline:
                break
            self._sleep(interval)
        if token.id in info.signatures:
            raise MigrationError(
                "kube-public/cluster-info carries a signature for %s (%s) that does not verify with its secret, so kubeadm join would refuse this cluster"
                % (token, self.where),
                "check that no other Secret or controller writes %s%s; delete the token and run the task again" % (JWS_PREFIX, token.id),
            )
        raise MigrationError(
            "kube-public/cluster-info was not signed for %s within %s s (%s), so kubeadm join would wait and fail"
            % (token, describe_number(timeout), self.where),
            "check that kube-controller-manager runs with the bootstrapsigner controller "
            "(--controllers=*,bootstrapsigner,tokencleaner), or raise wait_timeout",
        )


def describe_number(value: float) -> str:
    return ("%d" % value) if float(value).is_integer() else ("%.1f" % value)


def verify_discovery(info: ClusterInfo, token: Token, ca_hash: str, timeout: float = 30) -> None:
    """Do what kubeadm join's token discovery does, from here.

    Fetch cluster-info anonymously from the server it names, over TLS checked against the CA it
    publishes; the kubeconfig must be the one read before, its signature valid for the token,
    and its CA match ``ca_hash``.
    """
    url = info.server.rstrip("/") + "/api/v1/namespaces/%s/configmaps/%s" % (CLUSTER_INFO_NAMESPACE, CLUSTER_INFO)
    try:
        context = ssl.create_default_context(cadata=info.ca_pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as err:
        raise MigrationError(
            "The CA in kube-public/cluster-info cannot be loaded for TLS: %s" % err,
            "check the certificate-authority-data of the kubeconfig in kube-public/cluster-info",
        ) from None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    unreachable_fix = (
        "make %s reachable the way joining nodes reach it, or set verify_discovery=false when this host cannot" % info.server
    )
    untrusted = (
        "serve a certificate signed by the cluster CA for that address, or publish the right server and CA in cluster-info"
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            anonymous = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise MigrationError(
                "An anonymous client may not read kube-public/cluster-info at %s (%s %s), so kubeadm join's discovery would fail"
                % (info.server, err.code, err.reason),
                "allow anonymous requests (kube-apiserver --anonymous-auth) and bind system:anonymous to the Role "
                "kubeadm:bootstrap-signer-clusterinfo (get configmaps/cluster-info in kube-public), as kubeadm init does",
            ) from None
        raise MigrationError(
            "Reading kube-public/cluster-info anonymously at %s failed: %s %s" % (info.server, err.code, err.reason), unreachable_fix
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = err if isinstance(err, ssl.SSLError) else getattr(err, "reason", err)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise MigrationError(
                "The API server at %s does not present a certificate the CA in cluster-info trusts (%s), so kubeadm join would refuse it"
                % (info.server, getattr(reason, "verify_message", None) or reason),
                untrusted,
            ) from None
        raise MigrationError("Could not reach %s, the server cluster-info names: %s" % (info.server, reason), unreachable_fix) from None
    published = parse_cluster_info((anonymous or {}).get("data"))
    if published.kubeconfig != info.kubeconfig:
        raise MigrationError(
            "The cluster-info %s serves anonymously differs from the one read with the module's credentials" % info.server,
            "point the module at the same cluster that cluster-info's server belongs to",
        )
    if not published.signed_for(token):
        raise MigrationError(
            "cluster-info served anonymously at %s carries no valid signature for %s" % (info.server, token),
            "check that the bootstrapsigner controller runs, then run the task again",
        )
    if ca_hash not in published.ca_hashes:
        raise MigrationError(
            "The CA in cluster-info served at %s does not match %s" % (info.server, ca_hash),
            "point the module at the cluster whose CA hash the join uses",
        )


# -- the module's two states --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PresentRequest:
    ttl: int
    reuse_min_ttl: int
    groups: tuple[str, ...]
    description: str
    run_id: str | None
    wait_for_signature: bool
    verify_discovery: bool
    wait_timeout: int


def default_description(run_id: str | None) -> str:
    return "Join token made by hybridcloud.migration.bootstrap_token" + (" for run %s" % run_id if run_id else "")


def ensure_present(tokens: BootstrapTokens, request: PresentRequest, check_mode: bool) -> dict[str, t.Any]:
    """Reuse the run's token when it is still good for a join, else create one; then check it as a join would.

    The result holds the token only outside check mode.
    """
    info, now = tokens.cluster_info()
    result: dict[str, t.Any] = dict(
        ca_cert_hash=info.ca_hashes[0],
        ca_cert_hashes=list(info.ca_hashes),
        server=info.server,
        api_server_endpoint=info.api_server_endpoint,
        run_id=request.run_id,
    )
    reusable: TokenRecord | None = None
    if request.run_id:
        candidates = [
            record for record in tokens.list_tokens(request.run_id) if record.reusable(request.groups, request.reuse_min_ttl, now)
        ]
        reusable = max(candidates, key=lambda record: record.expiration or now, default=None)

    if reusable is not None and reusable.token is not None and reusable.expiration is not None:
        token, expiration, created = reusable.token, reusable.expiration, False
    elif check_mode:
        result.update(
            changed=True,
            reused=False,
            token_id=None,
            expiration=rfc3339(now + dt.timedelta(seconds=request.ttl)),
            signed=False,
            discovery_verified=False,
            msg="Check mode: would create a bootstrap token valid for %s; the token is not returned in check mode"
            % describe_seconds(request.ttl),
        )
        return result
    else:
        token, expiration, created = generate_token(), now + dt.timedelta(seconds=request.ttl), True
        tokens.create(token_secret(token, expiration, request.description, request.groups, request.run_id))

    result.update(
        changed=created,
        reused=not created,
        token_id=token.id,
        secret_name=token.secret_name,
        expiration=rfc3339(expiration),
        expires_in=int((expiration - now).total_seconds()),
    )
    if check_mode:
        result.update(
            signed=info.signed_for(token),
            discovery_verified=False,
            msg="Check mode: would reuse %s of run %s (expires %s); the token is not returned in check mode"
            % (token, request.run_id, rfc3339(expiration)),
        )
        return result
    try:
        if request.wait_for_signature:
            info = tokens.wait_for_signature(token, request.wait_timeout)
            if info.ca_hashes[0] != result["ca_cert_hash"]:
                raise MigrationError("The CA in kube-public/cluster-info changed while the token was made", "run the task again")
            if request.verify_discovery:
                verify_discovery(info, token, result["ca_cert_hash"])
        signed = request.wait_for_signature or info.signed_for(token)
    except MigrationError as err:
        if created and tokens.delete(token.id):
            raise MigrationError(err.problem + "; the new token %s was deleted again" % token.id, err.fix) from None
        raise
    result.update(
        token=token.value,
        signed=signed,
        discovery_verified=request.wait_for_signature and request.verify_discovery,
        msg="%s %s, valid until %s%s"
        % (
            "Created" if created else "Reused",
            token,
            rfc3339(expiration),
            "; cluster-info is signed for it and discovery works as kubeadm join does it"
            if request.wait_for_signature and request.verify_discovery
            else "; cluster-info is signed for it" if signed else "",
        ),
    )
    return result


def ensure_absent(
    tokens: BootstrapTokens,
    token_id: str | None,
    run_id: str | None,
    check_mode: bool,
) -> dict[str, t.Any]:
    """Delete the token with ``token_id``, or every token of ``run_id``."""
    if token_id:
        found = [token_id] if tokens.read_token(token_id) is not None else []
    else:
        found = sorted(record.name[len(SECRET_PREFIX):] for record in tokens.list_tokens(run_id))
    deleted = found if check_mode else [found_id for found_id in found if tokens.delete(found_id)]
    if not deleted:
        msg = "No bootstrap token %s" % ("with id %s" % token_id if token_id else "of run %s" % run_id)
    else:
        msg = "%s bootstrap token%s %s" % (
            "Check mode: would delete" if check_mode else "Deleted",
            "" if len(deleted) == 1 else "s",
            ", ".join(deleted),
        )
    return dict(changed=bool(deleted), deleted=deleted, msg=msg)
