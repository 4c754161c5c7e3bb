"""OIDC bearer-token authentication for the clinician endpoint (Keycloak-shaped access tokens).

``TokenVerifier`` checks an RS256 access token against the realm's JWKS, the issuer, the audience
and the expiry, and returns a ``Principal`` with the realm and client roles. ``require_roles`` and
``require_permission`` turn it into FastAPI dependencies: no or invalid token -> 401, valid token
without an allowed role -> 403. Only the subject and roles are ever logged, never the token.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.oidc_settings import OidcConfigError, OidcSettings  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
JWKS_TIMEOUT_S = 5.0
BEARER = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


class Permission(enum.StrEnum):
    """What a role lets a caller do."""

    PREDICT = "predict"
    MODEL_INFO = "model_info"


ROLE_PERMISSIONS: Mapping[str, frozenset[Permission]] = MappingProxyType({
    "radiologist": frozenset({Permission.PREDICT}),
    "admin": frozenset({Permission.PREDICT, Permission.MODEL_INFO}),
})


def roles_with(permission: Permission) -> frozenset[str]:
    """The roles that grant ``permission``."""
    return frozenset(role for role, perms in ROLE_PERMISSIONS.items() if permission in perms)


class AuthenticationError(Exception):
    """The token is missing or invalid (HTTP 401). ``reason`` never contains token contents."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityProviderUnavailable(Exception):
    """The JWKS could not be fetched, so no token can be checked (HTTP 503)."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: token subject, realm + client roles, requesting client (azp)."""

    subject: str
    roles: frozenset[str]
    client: str | None = None

    @property
    def permissions(self) -> frozenset[Permission]:
        """Everything the principal's roles allow."""
        return frozenset().union(*(ROLE_PERMISSIONS.get(role, ()) for role in self.roles))


_JWK_CLIENTS: dict[tuple[str, float, float], jwt.PyJWKClient] = {}
_JWK_LOCK = threading.Lock()


def _jwk_client(settings: OidcSettings) -> jwt.PyJWKClient:
    """One JWKS client per process and URL (it cannot be pickled, so it is never an attribute)."""
    key = (settings.jwks_url, settings.jwks_cache_s, settings.jwks_cooldown_s)
    with _JWK_LOCK:
        if key not in _JWK_CLIENTS:
            _JWK_CLIENTS[key] = jwt.PyJWKClient(
                settings.jwks_url, cache_jwk_set=True, lifespan=settings.jwks_cache_s,
                timeout=JWKS_TIMEOUT_S, cooldown_duration=settings.jwks_cooldown_s)
        return _JWK_CLIENTS[key]


_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuedAtError, "invalid iat claim"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "invalid signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.PyJWKClientError, "unknown signing key"),
)


class TokenVerifier:
    """Checks access tokens against ``settings``; holds nothing but the settings, so it pickles."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings

    def verify(self, token: str) -> Principal:
        """The principal of a valid access token; ``AuthenticationError`` otherwise."""
        try:
            return self._verify(token)
        except AuthenticationError as exc:
            log.info("token rejected: %s", exc.reason)
            raise

    def _verify(self, token: str) -> Principal:
        """``verify`` without the logging."""
        if not isinstance(token, str) or not token:
            raise AuthenticationError("missing token")
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM:
                raise AuthenticationError("algorithm not allowed")
            if not isinstance(header.get("kid"), str):
                raise AuthenticationError("token has no key id")
            key = _jwk_client(s).get_signing_key(header["kid"])
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=s.audience,
                                issuer=s.issuer, leeway=s.leeway_s,
                                options={"require": ["exp", "iat", "iss", "sub"]})
        except jwt.PyJWKClientConnectionError:
            log.warning("JWKS unreachable at %s", s.jwks_url)
            raise IdentityProviderUnavailable("identity provider unavailable") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"missing {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "malformed token")
            raise AuthenticationError(reason) from None
        if claims.get("typ") != "Bearer":
            raise AuthenticationError("not an access token")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise AuthenticationError("missing sub claim")
        roles = _roles(claims, s.client_id)
        azp = claims.get("azp")
        principal = Principal(claims["sub"], roles, azp if isinstance(azp, str) else None)
        log.debug("token accepted: subject=%s roles=%s", principal.subject, sorted(roles))
        return principal


def _roles(claims: dict[str, Any], client_id: str) -> frozenset[str]:
    """Realm roles plus ``client_id``'s client roles (Keycloak claims); malformed -> rejected."""
    clients = claims.get("resource_access", {})
    client = clients.get(client_id, {}) if isinstance(clients, dict) else None
    entries = [claims.get("realm_access", {}), client]
    roles = [entry.get("roles", []) if isinstance(entry, dict) else None for entry in entries]
    if not all(isinstance(rs, list) and all(isinstance(r, str) for r in rs) for rs in roles):
        raise AuthenticationError("malformed role claims")
    return frozenset().union(*roles)


def identify(verifier: TokenVerifier, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The caller behind ``credentials``; HTTPException 401 (no/invalid token) or 503 (JWKS unreachable)."""
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        return verifier.verify(credentials.credentials)
    except AuthenticationError as exc:
        raise HTTPException(401, f"invalid token: {exc.reason}",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
    except IdentityProviderUnavailable as exc:
        raise HTTPException(503, str(exc)) from None


def authorize(principal: Principal, allowed_roles: Collection[str]) -> Principal:
    """``principal`` if it holds one of ``allowed_roles``, else HTTPException 403."""
    if principal.roles.isdisjoint(allowed_roles):
        log.info("forbidden: subject=%s roles=%s", principal.subject, sorted(principal.roles))
        raise HTTPException(403, f"requires one of the roles: {', '.join(sorted(allowed_roles))}",
                            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
    return principal


def authenticate(verifier: TokenVerifier, credentials: HTTPAuthorizationCredentials | None,
                 allowed_roles: Collection[str]) -> Principal:
    """The caller behind ``credentials`` if it holds one of ``allowed_roles``.

    Raises HTTPException 401 (no/invalid token), 403 (no allowed role) or 503 (JWKS unreachable)."""
    return authorize(identify(verifier, credentials), allowed_roles)


def require_roles(verifier: TokenVerifier, *roles: str) -> Callable[..., Principal]:
    """A FastAPI dependency giving the ``Principal``, also stored as ``request.state.principal``
    (before the role check, so a 403 is audited with the caller's subject)."""
    if not roles:
        raise ValueError("require_roles needs at least one role")

    def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = identify(verifier, credentials)
        request.state.principal = principal
        return authorize(principal, roles)

    return dependency


def require_permission(verifier: TokenVerifier, permission: Permission) -> Callable[..., Principal]:
    """``require_roles`` for every role that grants ``permission`` (see ``ROLE_PERMISSIONS``)."""
    return require_roles(verifier, *sorted(roles_with(permission)))
