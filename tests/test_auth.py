"""OIDC token verification and the role policy, against a real issuer on loopback."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from serving.auth import (
    ROLE_PERMISSIONS,
    AuthenticationError,
    IdentityProviderUnavailable,
    OidcConfigError,
    OidcSettings,
    Permission,
    Principal,
    TokenVerifier,
    require_permission,
    require_roles,
    roles_with,
)
from tests.support.oidc import LocalIssuer


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as running:
        yield running


def settings_for(issuer: LocalIssuer, **overrides: object) -> OidcSettings:
    values: dict = {"issuer": issuer.issuer, "audience": issuer.audience,
                    "jwks_url": issuer.jwks_url, "jwks_cooldown_s": 0.0}
    return OidcSettings(**(values | overrides))


@pytest.fixture(scope="module")
def verifier(issuer: LocalIssuer) -> TokenVerifier:
    return TokenVerifier(settings_for(issuer))


# -- accepted tokens -----------------------------------------------------------------------------
def test_radiologist_token_gives_subject_roles_and_client(issuer: LocalIssuer,
                                                           verifier: TokenVerifier) -> None:
    principal = verifier.verify(issuer.mint(subject="dr-a", roles=("radiologist",)))
    assert principal.subject == "dr-a"
    assert principal.client == issuer.azp
    assert "radiologist" in principal.roles and "admin" not in principal.roles
    assert principal.permissions == {Permission.PREDICT}


def test_admin_may_predict_and_read_model_info(issuer: LocalIssuer,
                                                verifier: TokenVerifier) -> None:
    principal = verifier.verify(issuer.mint(subject="ops", roles=("admin",)))
    assert principal.permissions == {Permission.PREDICT, Permission.MODEL_INFO}
    assert roles_with(Permission.MODEL_INFO) == {"admin"}
    assert roles_with(Permission.PREDICT) == {"admin", "radiologist"}


def test_client_roles_come_from_the_configured_client_only(issuer: LocalIssuer) -> None:
    token = issuer.mint(roles=(), client_roles=("radiologist",))
    assert "radiologist" in TokenVerifier(settings_for(issuer)).verify(token).roles
    other = TokenVerifier(settings_for(issuer, client_id="another-client")).verify(token)
    assert "radiologist" not in other.roles
    # Keycloak's own `account` client roles never count as ours
    assert "manage-account" not in other.roles


def test_list_audience_containing_the_api_is_accepted(issuer: LocalIssuer,
                                                      verifier: TokenVerifier) -> None:
    token = issuer.mint(subject="dr-b", audience=["account", issuer.audience])
    assert verifier.verify(token).subject == "dr-b"


def test_expiry_within_leeway_is_accepted_beyond_it_rejected(issuer: LocalIssuer) -> None:
    token = issuer.mint(expires_in=-10)
    assert TokenVerifier(settings_for(issuer, leeway_s=30)).verify(token).subject == "clinician-1"
    with pytest.raises(AuthenticationError, match="expired"):
        TokenVerifier(settings_for(issuer, leeway_s=0)).verify(token)


# -- rejected tokens -----------------------------------------------------------------------------
REJECTED = {
    "expired": (lambda i: i.mint(expires_in=-120), "expired"),
    "wrong issuer": (lambda i: i.mint(iss=i.issuer + "-other"), "issuer"),
    "issuer with trailing slash": (lambda i: i.mint(iss=i.issuer + "/"), "issuer"),
    "default keycloak audience": (lambda i: i.mint(audience="account"), "audience"),
    "other audience": (lambda i: i.mint(audience=["account", "billing-api"]), "audience"),
    "no audience": (lambda i: i.mint(aud=None), "aud"),
    "foreign key": (lambda i: i.foreign_token(), "signature"),
    "tampered roles": (lambda i: i.tamper(i.mint(roles=()), realm_access={"roles": ["admin"]}),
                       "signature"),
    "tampered subject": (lambda i: i.tamper(i.mint(), sub="someone-else"), "signature"),
    "alg none": (lambda i: i.alg_none_token(), "algorithm"),
    "hs256 key confusion": (lambda i: i.hs256_confusion_token(), "algorithm"),
    "id token": (lambda i: i.mint(typ="ID"), "not an access token"),
    "refresh token": (lambda i: i.mint(typ="Refresh"), "not an access token"),
    "missing exp": (lambda i: i.mint(exp=None), "missing exp"),
    "missing iat": (lambda i: i.mint(iat=None), "missing iat"),
    "missing sub": (lambda i: i.mint(sub=None), "missing sub"),
    "empty sub": (lambda i: i.mint(sub=""), "sub"),
    "not yet valid": (lambda i: i.mint(nbf=i.claims()["iat"] + 600), "not yet valid"),
    "malformed realm roles": (lambda i: i.mint(realm_access={"roles": "admin"}), "role claims"),
    "malformed client roles": (lambda i: i.mint(resource_access=["admin"]), "role claims"),
    "garbage": (lambda i: "not-a-jwt", "malformed"),
    "empty": (lambda i: "", "missing token"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_hostile_or_invalid_tokens_are_rejected(
    issuer: LocalIssuer, verifier: TokenVerifier, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make, reason = REJECTED[case]
    token = make(issuer)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError, match=reason) as excinfo:
        verifier.verify(token)
    if token:
        assert token not in excinfo.value.reason
        assert token not in caplog.text
        assert all(part not in caplog.text for part in token.split(".") if len(part) > 8)


def test_a_kid_the_jwks_does_not_hold_is_rejected(issuer: LocalIssuer,
                                                   verifier: TokenVerifier) -> None:
    for header, reason in (({"kid": "no-such-kid"}, "unknown signing key"), ({}, "no key id")):
        token = issuer._compact({"alg": "RS256", "typ": "JWT", **header}, issuer.claims(), b"s")
        with pytest.raises(AuthenticationError, match=reason):
            verifier.verify(token)


# -- JWKS caching and key rotation ---------------------------------------------------------------
def test_jwks_is_cached_between_tokens() -> None:
    with LocalIssuer() as issuer:
        verifier = TokenVerifier(settings_for(issuer))
        for subject in ("a", "b", "c"):
            assert verifier.verify(issuer.mint(subject=subject)).subject == subject
        assert issuer.jwks_requests == 1


def test_key_rotation_refetches_the_jwks_and_withdrawn_keys_stop_working() -> None:
    with LocalIssuer() as issuer:
        verifier = TokenVerifier(settings_for(issuer))
        old_token = issuer.mint(subject="before")
        assert verifier.verify(old_token).subject == "before"
        issuer.rotate()  # new kid, old key still published
        assert verifier.verify(issuer.mint(subject="after")).subject == "after"
        assert issuer.jwks_requests == 2
        assert verifier.verify(old_token).subject == "before"
        issuer.rotate(drop_old=True)  # withdraw every earlier key
        newest = issuer.mint(subject="newest")
        assert verifier.verify(newest).subject == "newest"
        assert issuer.jwks_requests == 3
        # the cached set no longer holds the old kid: a refetch confirms it is gone
        with pytest.raises(AuthenticationError, match="unknown signing key"):
            verifier.verify(old_token)
        assert issuer.jwks_requests == 4


def test_cooldown_limits_refetches_for_unknown_kids() -> None:
    with LocalIssuer() as issuer:
        verifier = TokenVerifier(settings_for(issuer, jwks_cooldown_s=60))
        assert verifier.verify(issuer.mint()).subject == "clinician-1"
        issuer.rotate()
        with pytest.raises(AuthenticationError, match="unknown signing key"):
            verifier.verify(issuer.mint())
        assert issuer.jwks_requests == 1


def test_unreachable_jwks_is_unavailable_not_unauthenticated() -> None:
    with LocalIssuer() as issuer:
        verifier = TokenVerifier(settings_for(issuer))
        token = issuer.mint()
    with pytest.raises(IdentityProviderUnavailable):
        verifier.verify(token)
    app = FastAPI()

    @app.post("/predict", dependencies=[Depends(require_roles(verifier, "radiologist"))])
    def predict() -> dict:
        return {}

    with TestClient(app) as test_client:
        response = test_client.post("/predict", headers=bearer(token))
    assert response.status_code == 503
    assert response.json() == {"detail": "identity provider unavailable"}


def test_verifier_survives_a_pickle_round_trip(issuer: LocalIssuer,
                                                verifier: TokenVerifier) -> None:
    verifier.verify(issuer.mint())  # a JWKS client now exists in this process
    clone = pickle.loads(pickle.dumps(verifier))
    assert clone.settings == verifier.settings
    assert clone.verify(issuer.mint(subject="worker")).subject == "worker"
    error = pickle.loads(pickle.dumps(AuthenticationError("token expired")))
    assert error.reason == "token expired"


# -- settings ------------------------------------------------------------------------------------
def test_from_env_defaults_jwks_url_and_client_id() -> None:
    env = {"OIDC_ISSUER": "https://kc.example/realms/r", "OIDC_AUDIENCE": "api"}
    settings = OidcSettings.from_env(env)
    assert settings.jwks_url == "https://kc.example/realms/r/protocol/openid-connect/certs"
    assert settings.client_id == "api"
    assert (settings.leeway_s, settings.jwks_cache_s, settings.jwks_cooldown_s) == (30, 300, 30)


def test_from_env_reads_every_variable() -> None:
    env = {"OIDC_ISSUER": "http://127.0.0.1:8080/realms/r", "OIDC_AUDIENCE": "api",
           "OIDC_JWKS_URL": "http://keycloak:8080/realms/r/protocol/openid-connect/certs",
           "OIDC_CLIENT_ID": "web", "OIDC_LEEWAY_S": "5", "OIDC_JWKS_CACHE_S": "60",
           "OIDC_JWKS_COOLDOWN_S": "0"}
    assert OidcSettings.from_env(env) == OidcSettings(
        "http://127.0.0.1:8080/realms/r", "api", env["OIDC_JWKS_URL"], "web", 5.0, 60.0, 0.0)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_config_file_with_environment_overrides(tmp_path: Path, suffix: str) -> None:
    values = {"issuer": "https://kc.example/realms/r", "audience": "api", "leeway_s": 10}
    path = tmp_path / f"serve{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        path.write_text("[oidc]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    settings = OidcSettings.from_env({"OIDC_CONFIG_FILE": str(path), "OIDC_AUDIENCE": "api-2"})
    assert settings.issuer == values["issuer"]
    assert (settings.audience, settings.leeway_s) == ("api-2", 10.0)
    assert OidcSettings.from_env({}, config_file=path).audience == "api"


BASE_ENV = {"OIDC_ISSUER": "https://kc/realms/r", "OIDC_AUDIENCE": "api"}


@pytest.mark.parametrize(("env", "message"), [
    ({}, "OIDC_ISSUER, OIDC_AUDIENCE"),
    ({"OIDC_ISSUER": "https://kc.example/realms/r"}, "OIDC_AUDIENCE"),
    (BASE_ENV | {"OIDC_AUDIENCE": ""}, "OIDC_AUDIENCE"),
    (BASE_ENV | {"OIDC_ISSUER": "kc.example/realms/r"}, "issuer must be an http"),
    (BASE_ENV | {"OIDC_JWKS_URL": "file:///etc/jwks"}, "jwks_url must be an http"),
    (BASE_ENV | {"OIDC_LEEWAY_S": "soon"}, "leeway_s must be a number"),
    (BASE_ENV | {"OIDC_LEEWAY_S": "-1"}, ">= 0"),
    (BASE_ENV | {"OIDC_JWKS_COOLDOWN_S": "nan"}, ">= 0"),
    (BASE_ENV | {"OIDC_JWKS_CACHE_S": "0"}, "> 0"),
    ({"OIDC_CONFIG_FILE": "/nonexistent/oidc.toml"}, "cannot read"),
])
def test_from_env_rejects_missing_or_invalid_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(OidcConfigError, match=message):
        OidcSettings.from_env(env)


def test_config_file_rejects_unknown_keys_and_wrong_types(tmp_path: Path) -> None:
    path = tmp_path / "oidc.toml"
    path.write_text('issuer = "https://kc/realms/r"\naudience = "api"\nissuer_url = "typo"\n')
    with pytest.raises(OidcConfigError, match="unknown OIDC settings.*issuer_url"):
        OidcSettings.from_env({}, config_file=path)
    path.write_text('issuer = "https://kc/realms/r"\naudience = 7\n')
    with pytest.raises(OidcConfigError, match="audience must be a string"):
        OidcSettings.from_env({}, config_file=path)


# -- the FastAPI dependency ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(verifier: TokenVerifier) -> Iterator[TestClient]:
    app = FastAPI()
    may_predict = require_permission(verifier, Permission.PREDICT)

    @app.post("/predict")
    def predict(principal: Principal = Depends(may_predict)) -> dict:  # noqa: B008 (FastAPI idiom)
        return {"subject": principal.subject}

    @app.post("/model-info", dependencies=[Depends(require_roles(verifier, "admin"))])
    def model_info() -> dict:
        return {"version": "1"}

    with TestClient(app) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_is_401_with_bearer_challenge(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        response = client.post("/predict", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_invalid_token_is_401_with_reason(client: TestClient, issuer: LocalIssuer) -> None:
    cases = ((issuer.mint(expires_in=-120), "expired"), (issuer.alg_none_token(), "algorithm"))
    for token, reason in cases:
        response = client.post("/predict", headers=bearer(token))
        assert response.status_code == 401
        assert reason in response.json()["detail"]
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert token not in response.text


def test_role_policy_over_http(client: TestClient, issuer: LocalIssuer) -> None:
    radiologist = bearer(issuer.mint(subject="dr-a", roles=("radiologist",)))
    admin = bearer(issuer.mint(subject="ops", roles=("admin",)))
    nobody = bearer(issuer.mint(subject="nurse", roles=("nurse",)))
    assert client.post("/predict", headers=radiologist).json() == {"subject": "dr-a"}
    assert client.post("/predict", headers=admin).json() == {"subject": "ops"}
    assert client.post("/predict", headers=nobody).status_code == 403
    assert client.post("/model-info", headers=radiologist).status_code == 403
    assert client.post("/model-info", headers=admin).json() == {"version": "1"}
    assert "admin" in client.post("/model-info", headers=radiologist).json()["detail"]


def test_the_token_never_reaches_the_logs(client: TestClient, issuer: LocalIssuer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [issuer.mint(subject="dr-log", roles=("radiologist",)),
              issuer.mint(subject="dr-log", roles=("nurse",)),
              issuer.mint(subject="dr-log", expires_in=-120),
              issuer.foreign_token(subject="dr-log")]
    statuses = [client.post("/predict", headers=bearer(t)).status_code for t in tokens]
    assert statuses == [200, 403, 401, 401]
    assert "dr-log" in caplog.text  # the subject is logged ...
    for token in tokens:  # ... the token and its parts never are
        assert all(part not in caplog.text for part in token.split("."))


def test_role_map_is_the_documented_policy() -> None:
    assert dict(ROLE_PERMISSIONS) == {"radiologist": {Permission.PREDICT},
                                      "admin": {Permission.PREDICT, Permission.MODEL_INFO}}
    with pytest.raises(TypeError):
        ROLE_PERMISSIONS["nurse"] = frozenset()  # type: ignore[index]
