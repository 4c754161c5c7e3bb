"""A real OIDC issuer on loopback for tests, shaped like a Keycloak realm.

It holds RSA-2048 signing keys, serves the realm's JWKS and discovery document over HTTP on a free
127.0.0.1 port, and mints signed access tokens with Keycloak's claims (``realm_access``,
``resource_access``, ``azp``, ``typ``). It also crafts the hostile tokens a verifier must reject::

    with LocalIssuer() as issuer:
        token = issuer.mint(subject="dr-a", roles=("radiologist",))
        os.environ.update(issuer.env())   # OIDC_ISSUER, OIDC_AUDIENCE, OIDC_JWKS_URL

Each issuer gets its own realm name unless one is given, so a JWKS client cached for an earlier
issuer on a reused port never sees this one's keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

DEFAULT_AUDIENCE = "tomosight-api"
DEFAULT_AZP = "tomosight-viewer"
_LOOPBACK = "127.0.0.1,localhost"


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-2048 private key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class LocalIssuer:
    """A Keycloak-like realm on loopback: JWKS, discovery document, token minting, key rotation."""

    def __init__(self, realm: str | None = None, audience: str = DEFAULT_AUDIENCE,
                 azp: str = DEFAULT_AZP) -> None:
        self.realm = realm or f"tomosight-{secrets.token_hex(4)}"
        self.audience = audience
        self.azp = azp
        self.kid = uuid.uuid4().hex
        self._keys: dict[str, rsa.RSAPrivateKey] = {self.kid: new_rsa_key()}
        self.jwks_requests = 0  # how often the JWKS was fetched
        self._server: ThreadingHTTPServer | None = None
        self._saved_env: dict[str, str | None] = {}

    # -- the HTTP side -------------------------------------------------------------------------
    def __enter__(self) -> Self:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                documents = {issuer.jwks_path: issuer.jwks, issuer.discovery_path: issuer.discovery}
                if self.path not in documents:
                    self.send_error(404)
                    return
                if self.path == issuer.jwks_path:
                    issuer.jwks_requests += 1
                body = json.dumps(documents[self.path]()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the per-request stderr lines."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="oidc-issuer").start()
        for name in ("NO_PROXY", "no_proxy"):  # urllib must not send loopback requests to a proxy
            self._saved_env[name] = os.environ.get(name)
            os.environ[name] = ",".join(filter(None, (os.environ.get(name), _LOOPBACK)))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use LocalIssuer as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        """The ``iss`` of the tokens: ``{base}/realms/{realm}`` as Keycloak writes it."""
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def jwks_path(self) -> str:
        return f"/realms/{self.realm}/protocol/openid-connect/certs"

    @property
    def discovery_path(self) -> str:
        return f"/realms/{self.realm}/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return self.base_url + self.jwks_path

    def env(self) -> dict[str, str]:
        """The ``OIDC_*`` variables that point a verifier at this issuer."""
        return {"OIDC_ISSUER": self.issuer, "OIDC_AUDIENCE": self.audience,
                "OIDC_JWKS_URL": self.jwks_url}

    def jwks(self) -> dict[str, Any]:
        """The public half of every current key, with ``kid``, ``use=sig`` and ``alg=RS256``."""
        keys = []
        for kid, key in list(self._keys.items()):
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def discovery(self) -> dict[str, Any]:
        """The parts of the OpenID Provider metadata that a resource server reads."""
        oidc = f"{self.issuer}/protocol/openid-connect"
        return {"issuer": self.issuer, "jwks_uri": self.jwks_url,
                "authorization_endpoint": f"{oidc}/auth", "token_endpoint": f"{oidc}/token",
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code"], "subject_types_supported": ["public"]}

    # -- keys -------------------------------------------------------------------------------------
    def rotate(self, drop_old: bool = False) -> str:
        """Add a key with a new ``kid`` and sign with it from now on; optionally drop the rest."""
        kid = uuid.uuid4().hex
        self._keys = ({} if drop_old else dict(self._keys)) | {kid: new_rsa_key()}
        self.kid = kid
        return kid

    @property
    def public_key_pem(self) -> bytes:
        """The current signing key's public half as PEM (what HS256 key confusion abuses)."""
        return self._keys[self.kid].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    # -- tokens -----------------------------------------------------------------------------------
    def claims(self, subject: str = "clinician-1", roles: tuple[str, ...] = ("radiologist",),
               client_roles: tuple[str, ...] = (), audience: str | list[str] | None = None,
               expires_in: int = 300, typ: str = "Bearer", **claims: Any) -> dict[str, Any]:
        """A Keycloak-shaped access-token payload; a keyword claim set to ``None`` is left out."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "exp": now + expires_in, "iat": now, "jti": str(uuid.uuid4()), "iss": self.issuer,
            "aud": self.audience if audience is None else audience, "sub": subject, "typ": typ,
            "azp": self.azp, "scope": "openid profile",
            "realm_access": {"roles": [*roles, "offline_access", f"default-roles-{self.realm}"]},
            "resource_access": {self.audience: {"roles": list(client_roles)},
                                "account": {"roles": ["manage-account", "view-profile"]}},
        }
        payload.update(claims)
        return {k: v for k, v in payload.items() if v is not None}

    def mint(self, **kwargs: Any) -> str:
        """A signed access token; keyword arguments as for ``claims``."""
        return jwt.encode(self.claims(**kwargs), self._keys[self.kid], algorithm="RS256",
                          headers={"kid": self.kid, "typ": "JWT"})

    def foreign_token(self, **kwargs: Any) -> str:
        """Well-formed, current ``kid``, but signed by a key the issuer never published."""
        return jwt.encode(self.claims(**kwargs), new_rsa_key(), algorithm="RS256",
                          headers={"kid": self.kid, "typ": "JWT"})

    def alg_none_token(self, **kwargs: Any) -> str:
        """Unsigned: ``alg=none`` and an empty signature."""
        header = {"alg": "none", "typ": "JWT", "kid": self.kid}
        return self._compact(header, self.claims(**kwargs), b"")

    def hs256_confusion_token(self, **kwargs: Any) -> str:
        """HS256 with the issuer's public key PEM as the HMAC secret (classic key confusion)."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.kid}
        signing_input = self._compact(header, self.claims(**kwargs), None)
        mac = hmac.new(self.public_key_pem, signing_input.encode("ascii"), hashlib.sha256)
        signature = mac.digest()
        return f"{signing_input}.{b64url(signature)}"

    @staticmethod
    def tamper(token: str, **changes: Any) -> str:
        """``token`` with payload claims changed and the original signature kept."""
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims.update(changes)
        return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"

    @staticmethod
    def _compact(header: dict[str, Any], payload: dict[str, Any], signature: bytes | None) -> str:
        """``header.payload`` (signing input), plus ``.signature`` when one is given."""
        parts = [b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode())]
        return ".".join(parts if signature is None else [*parts, b64url(signature)])
