"""bootstrap_token's plain Python: token format, the Secret, expiration, the CA hash, the JWS.

The CA hash is compared with what openssl computes for certificates made here with
``cryptography``; the JWS with an independent reading of RFC 7515 (tests/helpers/jws.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import subprocess

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.hybridcloud.migration.plugins.module_utils import bootstrap_token as bt
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from tests.helpers.jws import jws_signature_valid

NOW = dt.datetime(2026, 11, 25, 19, 15, 0, tzinfo=dt.timezone.utc)
TOKEN = bt.Token("abcdef", "0123456789abcdef")


# -- token format ---------------------------------------------------------------------------


def test_generated_tokens_have_kubeadms_format_and_differ():
    tokens = [bt.generate_token() for _n in range(200)]
    for token in tokens:
        assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token.value), token.id
        assert bt.parse_token(token.value) == token
        assert token.secret_name == "bootstrap-token-" + token.id
    assert len({token.id for token in tokens}) > 190  # 36**6 ids: collisions are rare
    assert len({token.secret for token in tokens}) == 200
    # Every character of the alphabet turns up: the draw is not limited to a part of it.
    assert set("".join(token.secret for token in tokens)) == set("abcdefghijklmnopqrstuvwxyz0123456789")


def test_the_secret_part_never_shows_in_str_or_repr():
    assert TOKEN.secret not in str(TOKEN) and TOKEN.secret not in repr(TOKEN)
    assert "abcdef" in str(TOKEN)


@pytest.mark.parametrize(
    "value", ["abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef0123456789abcdef", "abcdef.0123456789abcdef.x", ""]
)
def test_malformed_tokens_are_refused_without_echoing_them(value):
    with pytest.raises(MigrationError) as err:
        bt.parse_token(value)
    assert "<id>.<secret>" in err.value.fix
    if value:
        assert value not in err.value.message


def test_token_ids_run_ids_and_groups_are_checked():
    assert bt.check_token_id("k2x9q0") == "k2x9q0"
    with pytest.raises(MigrationError, match="not a bootstrap token id"):
        bt.check_token_id("k2x9q")
    assert bt.check_run_id("mig-2026-11-25.1") == "mig-2026-11-25.1"
    with pytest.raises(MigrationError, match="label value"):
        bt.check_run_id("run id with spaces")
    with pytest.raises(MigrationError, match="label value"):
        bt.check_run_id("x" * 64)
    assert bt.check_groups([bt.DEFAULT_GROUP]) == [bt.DEFAULT_GROUP]
    with pytest.raises(MigrationError) as err:
        bt.check_groups([bt.DEFAULT_GROUP, "system:nodes"])
    assert "'system:nodes'" in err.value.problem and "system:bootstrappers:" in err.value.fix


# -- TTL and expiration ---------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [("3600", 3600), ("1h", 3600), ("45m", 2700), ("90s", 90), ("1h0m0s", 3600), ("59m59s", 3599)])
def test_durations_read_as_kubeadm_writes_them(text, seconds):
    assert bt.parse_duration(text, "ttl") == seconds


@pytest.mark.parametrize("text", ["", "1d", "h", "-5m", "1.5h", "m30"])
def test_bad_durations_are_refused(text):
    with pytest.raises(MigrationError, match="is not a duration"):
        bt.parse_duration(text, "ttl")


def test_ttl_is_at_most_one_hour_and_the_message_says_so():
    bt.check_ttl(3600, 900)
    with pytest.raises(MigrationError) as err:
        bt.check_ttl(bt.parse_duration("2h", "ttl"), 900)
    assert err.value.problem == "ttl 2h is longer than the 1 hour a bootstrap token may live here"
    assert "use a ttl of 1h or less" in err.value.fix
    with pytest.raises(MigrationError, match="ttl 3601s is longer"):
        bt.check_ttl(3601, 900)
    with pytest.raises(MigrationError, match="too short"):
        bt.check_ttl(30, 0)
    with pytest.raises(MigrationError, match="no token could ever be reused"):
        bt.check_ttl(900, 900)


def test_expiration_is_rfc3339_utc_as_kubeadm_writes_it():
    local = NOW.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert bt.rfc3339(local + dt.timedelta(hours=1)) == "2026-11-25T20:15:00Z"
    assert bt.parse_rfc3339("2026-11-25T20:15:00Z") == NOW + dt.timedelta(hours=1)
    # kubeadm before 1.x wrote local offsets; Go parses fractions too.
    assert bt.parse_rfc3339("2026-11-25T21:15:00+01:00") == NOW + dt.timedelta(hours=1)
    assert bt.parse_rfc3339("2026-11-25T20:15:00.250Z") == NOW + dt.timedelta(hours=1, milliseconds=250)
    for bad in ("2026-11-25 20:15", "2026-11-25T20:15:00", "tomorrow", None, ""):
        assert bt.parse_rfc3339(bad) is None


def test_the_api_servers_clock_comes_from_its_date_header():
    assert bt.server_time("Wed, 25 Nov 2026 19:15:00 GMT", NOW - dt.timedelta(hours=3)) == NOW
    assert bt.server_time(None, NOW) == NOW
    assert bt.server_time("not a date", NOW) == NOW


# -- the Secret -----------------------------------------------------------------------------


def decoded(secret):
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_the_secret_has_kubeadms_fields():
    secret = bt.token_secret(TOKEN, NOW + dt.timedelta(minutes=30), "Join token for run r1", [bt.DEFAULT_GROUP], run_id="r1")
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["metadata"]["name"] == "bootstrap-token-abcdef" and secret["metadata"]["namespace"] == "kube-system"
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "hybridcloud.migration", "migration.hybridcloud.io/run-id": "r1"}
    assert decoded(secret) == {
        "token-id": "abcdef",
        "token-secret": "0123456789abcdef",
        "expiration": "2026-11-25T19:45:00Z",
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
        "description": "Join token for run r1",
    }
    two_groups = bt.token_secret(TOKEN, NOW, "", [bt.DEFAULT_GROUP, "system:bootstrappers:dr"])
    assert decoded(two_groups)["auth-extra-groups"] == "system:bootstrappers:kubeadm:default-node-token,system:bootstrappers:dr"
    assert "description" not in decoded(two_groups)  # kubeadm leaves an empty description out
    assert "migration.hybridcloud.io/run-id" not in two_groups["metadata"]["labels"]


def record(minutes_left=30, groups=(bt.DEFAULT_GROUP,), **data_over):
    secret = bt.token_secret(TOKEN, NOW + dt.timedelta(minutes=minutes_left), "d", list(groups), run_id="r1")
    for key, value in data_over.items():
        key = key.replace("_", "-")
        if value is None:
            del secret["data"][key]
        else:
            secret["data"][key] = base64.b64encode(value.encode()).decode()
    return bt.read_token_secret(secret)


def test_a_secret_reads_back_as_the_token_it_holds():
    read = record()
    assert read.token == TOKEN and read.run_id == "r1" and read.description == "d"
    assert read.expiration == NOW + dt.timedelta(minutes=30)
    assert read.groups == (bt.DEFAULT_GROUP,) and sorted(read.usages) == ["authentication", "signing"]
    assert read.seconds_left(NOW) == 1800


def test_only_a_token_good_for_a_join_with_enough_time_left_is_reused():
    groups = (bt.DEFAULT_GROUP,)
    assert record(30).reusable(groups, 15 * 60, NOW)
    assert record(15).reusable(groups, 15 * 60, NOW)
    assert not record(14).reusable(groups, 15 * 60, NOW)
    assert not record(-1).reusable(groups, 0, NOW)  # expired, the tokencleaner has not removed it yet
    assert not record(30).reusable(("system:bootstrappers:other",), 60, NOW)
    assert not record(30, usage_bootstrap_signing=None).reusable(groups, 60, NOW)  # no cluster-info signature
    assert not record(30, usage_bootstrap_authentication="false").reusable(groups, 60, NOW)
    assert not record(30, expiration=None).reusable(groups, 60, NOW)  # never expires: not one of ours
    assert not record(30, token_secret="short").reusable(groups, 60, NOW)
    assert record(30, token_secret="short").token is None
    assert not record(30, token_id="zzzzzz").reusable(groups, 60, NOW)  # id does not match the name


# -- the CA hash ----------------------------------------------------------------------------


def make_ca(key, common_name="hclab-ca", version_extensions=True):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
    )
    if version_extensions:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def openssl_ca_hash(pem: bytes) -> str:
    """`openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`, as the kubeadm docs compute it."""
    pubkey = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=pem, capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey, capture_output=True, check=True).stdout
    digest = subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.split()[0].decode()
    return "sha256:" + digest


KEYS = {
    "rsa-2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_ca_hash_equals_openssls_sha256_of_the_public_key_info(kind):
    cert = make_ca(KEYS[kind]())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    ours = bt.ca_cert_hash(cert.public_bytes(serialization.Encoding.DER))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", ours)
    assert ours == openssl_ca_hash(pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert bt.subject_public_key_info(cert.public_bytes(serialization.Encoding.DER)) == spki


def test_a_ca_without_extensions_and_a_long_subject_hashes_right():
    cert = make_ca(KEYS["rsa-2048"](), common_name="c" * 64, version_extensions=False)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert bt.ca_cert_hash(der) == openssl_ca_hash(cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("damage", [lambda der: der[:-1], lambda der: der[:40], lambda der: b"\x30\x80" + der[2:], lambda der: b"\x02\x01\x00"])
def test_a_damaged_certificate_is_refused_naming_cluster_info(damage):
    der = make_ca(KEYS["ec-p256"]()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(MigrationError) as err:
        bt.ca_cert_hash(damage(der))
    assert "cannot be read" in err.value.problem and "cluster-info" in err.value.fix


def cluster_info_data(ca_pem: bytes, server="https://10.0.0.10:6443", **extra):
    kubeconfig = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "", "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
            "contexts": None,
            "current-context": "",
            "users": None,
        }
    )
    return {"kubeconfig": kubeconfig, **extra}


def test_cluster_info_yields_server_endpoint_and_a_hash_per_ca_in_the_bundle():
    first, second = make_ca(KEYS["ec-p256"](), "ca-1"), make_ca(KEYS["rsa-2048"](), "ca-2")
    bundle = first.public_bytes(serialization.Encoding.PEM) + second.public_bytes(serialization.Encoding.PEM)
    info = bt.parse_cluster_info(cluster_info_data(bundle, **{"jws-kubeconfig-abcdef": "x..y"}))
    assert info.server == "https://10.0.0.10:6443" and info.api_server_endpoint == "10.0.0.10:6443"
    assert info.ca_hashes == (openssl_ca_hash(first.public_bytes(serialization.Encoding.PEM)), openssl_ca_hash(second.public_bytes(serialization.Encoding.PEM)))
    assert info.ca_pem == bundle
    assert info.signatures == {"abcdef": "x..y"}


@pytest.mark.parametrize(
    "data, needle",
    [
        ({}, "has no kubeconfig"),
        ({"kubeconfig": "clusters: ["}, "is not YAML"),
        ({"kubeconfig": "apiVersion: v1\nclusters: []\n"}, "names no cluster"),
        ({"kubeconfig": "clusters:\n- cluster: {server: 'https://x:6443'}\n"}, "lacks certificate-authority-data"),
        ({"kubeconfig": "clusters:\n- cluster: {server: 'https://x:6443', certificate-authority-data: '!!'}\n"}, "is not base64"),
        (
            {"kubeconfig": "clusters:\n- cluster: {server: 'https://x:6443', certificate-authority-data: '%s'}\n" % base64.b64encode(b"no pem").decode()},
            "holds no PEM certificate",
        ),
    ],
)
def test_unusable_cluster_info_is_refused_with_the_kubeadm_fix(data, needle):
    with pytest.raises(MigrationError) as err:
        bt.parse_cluster_info(data)
    assert needle in err.value.problem
    assert "kubeadm init phase bootstrap-token" in err.value.fix


# -- the JWS --------------------------------------------------------------------------------


def test_our_detached_signature_verifies_independently_and_has_kubeadms_shape():
    payload = cluster_info_data(make_ca(KEYS["ec-p256"]()).public_bytes(serialization.Encoding.PEM))["kubeconfig"]
    jws = bt.detached_jws(payload, TOKEN)
    header, empty, signature = jws.split(".")
    assert empty == "" and "=" not in jws
    # go-jose's protected header: compact JSON, keys sorted.
    assert base64.urlsafe_b64decode(header + "==") == b'{"alg":"HS256","kid":"abcdef"}'
    assert len(base64.urlsafe_b64decode(signature + "=")) == 32
    assert jws_signature_valid(jws, payload, TOKEN.id, TOKEN.secret)
    assert bt.detached_jws_valid(jws, payload, TOKEN)


def test_a_signature_verifies_only_for_its_payload_token_id_and_secret():
    payload = "apiVersion: v1\nclusters: []\n"
    jws = bt.detached_jws(payload, TOKEN)
    assert not bt.detached_jws_valid(jws, payload + " ", TOKEN)
    assert not bt.detached_jws_valid(jws, payload, bt.Token(TOKEN.id, "fedcba9876543210"))
    assert not bt.detached_jws_valid(jws, payload, bt.Token("zzzzzz", TOKEN.secret))
    assert not bt.detached_jws_valid(jws.replace("..", ".cGF5bG9hZA."), payload, TOKEN)  # not detached
    assert not bt.detached_jws_valid("", payload, TOKEN)
    # A signature by someone who knows only the token id: HS256 with another key.
    forged = bt.detached_jws(payload, bt.Token(TOKEN.id, "0" * 16))
    assert not bt.detached_jws_valid(forged, payload, TOKEN)


def test_cluster_info_is_signed_for_a_token_only_with_its_valid_signature():
    data = cluster_info_data(make_ca(KEYS["ec-p256"]()).public_bytes(serialization.Encoding.PEM))
    other = bt.Token("zzzzzz", "0123456789abcdef")
    data["jws-kubeconfig-abcdef"] = bt.detached_jws(data["kubeconfig"], TOKEN)
    data["jws-kubeconfig-zzzzzz"] = bt.detached_jws(data["kubeconfig"] + "tampered", other)
    info = bt.parse_cluster_info(data)
    assert info.signed_for(TOKEN)
    assert not info.signed_for(other)
    assert not info.signed_for(bt.Token("qqqqqq", "0123456789abcdef"))
