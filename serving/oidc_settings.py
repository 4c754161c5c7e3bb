"""OIDC settings for the clinician endpoint: issuer, audience, JWKS URL and timings.

Read from ``OIDC_*`` environment variables and/or a TOML or JSON config file; missing or invalid
settings raise ``OidcConfigError`` with the names to set.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class OidcConfigError(ValueError):
    """The OIDC settings are missing or invalid."""


@dataclass(frozen=True)
class OidcSettings:
    """Where tokens come from and how strictly they are checked. Empty ``jwks_url``/``client_id``
    default to Keycloak's ``{issuer}/protocol/openid-connect/certs`` and to ``audience``."""

    issuer: str
    audience: str
    jwks_url: str = ""
    client_id: str = ""
    leeway_s: float = 30.0
    jwks_cache_s: float = 300.0
    jwks_cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise OidcConfigError("OIDC issuer and audience are required")
        if not self.jwks_url:
            jwks_url = self.issuer.rstrip("/") + "/protocol/openid-connect/certs"
            object.__setattr__(self, "jwks_url", jwks_url)
        if not self.client_id:
            object.__setattr__(self, "client_id", self.audience)
        for name in ("issuer", "jwks_url"):
            if urlparse(getattr(self, name)).scheme not in ("http", "https"):
                raise OidcConfigError(f"OIDC {name} must be an http(s) URL")
        durations = (self.leeway_s, self.jwks_cache_s, self.jwks_cooldown_s)
        if not all(math.isfinite(d) and d >= 0 for d in durations) or self.jwks_cache_s == 0:
            raise OidcConfigError("OIDC leeway_s, jwks_cooldown_s must be >= 0; jwks_cache_s > 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ,
                 config_file: str | os.PathLike[str] | None = None) -> OidcSettings:
        """Settings from a TOML/JSON file (``config_file`` or ``OIDC_CONFIG_FILE``; keys named as
        the fields, top level or in an ``[oidc]`` table), overridden by ``OIDC_<FIELD>`` variables
        (``OIDC_ISSUER``, ``OIDC_AUDIENCE``, ``OIDC_JWKS_URL``, ``OIDC_CLIENT_ID``,
        ``OIDC_LEEWAY_S``, ``OIDC_JWKS_CACHE_S``, ``OIDC_JWKS_COOLDOWN_S``)."""
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        path = config_file or env.get("OIDC_CONFIG_FILE")
        if path:
            values.update(_read_config(Path(path), names))
        values.update({k: env[f"OIDC_{k.upper()}"] for k in names if env.get(f"OIDC_{k.upper()}")})
        missing = [f"OIDC_{k.upper()}" for k in ("issuer", "audience") if not values.get(k)]
        if missing:
            where = "environment or config file"
            raise OidcConfigError(f"missing OIDC settings: {', '.join(missing)} ({where})")
        for key, value in values.items():
            if key not in _DURATIONS:
                if not isinstance(value, str):
                    raise OidcConfigError(f"OIDC {key} must be a string")
                continue
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                raise OidcConfigError(f"OIDC {key} must be a number of seconds") from None
        return cls(**values)


_DURATIONS = ("leeway_s", "jwks_cache_s", "jwks_cooldown_s")


def _read_config(path: Path, allowed: set[str]) -> dict[str, Any]:
    """The OIDC table of a TOML or JSON config file, with unknown keys rejected."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise OidcConfigError(f"cannot read OIDC config file {path.name}: {exc}") from None
    data = data.get("oidc", data) if isinstance(data, dict) else None
    if not isinstance(data, dict):
        raise OidcConfigError(f"OIDC config file {path.name} must hold a table of settings")
    if unknown := sorted(set(data) - allowed):
        raise OidcConfigError(f"unknown OIDC settings in {path.name}: {', '.join(unknown)}")
    return data
