"""Checking cluster-info's bootstrap-token signatures independently of the collection's code.

The bootstrapsigner controller signs ``kube-public/cluster-info`` for each bootstrap token with a
detached JWS (RFC 7515 appendix F): ``<header>..<signature>``, HS256, keyed by the token secret,
``kid`` the token id. Tests use this reading of the RFC as the oracle, so a module's own
verification is never checked against itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jws_signature_valid(jws: str, payload: str, token_id: str, token_secret: str) -> bool:
    """Check a detached JWS (header..signature) the way `kubeadm join` does before trusting cluster-info."""
    header_b64, empty, signature_b64 = jws.split(".")
    header = json.loads(_b64url_decode(header_b64))
    payload_b64 = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    expected = hmac.new(token_secret.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    return empty == "" and header == {"alg": "HS256", "kid": token_id} and hmac.compare_digest(expected, _b64url_decode(signature_b64))
