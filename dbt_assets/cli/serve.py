"""``tomosight serve``: the clinician endpoint (LitServe) over the home's registered model.

OIDC settings come from ``OIDC_ISSUER``, ``OIDC_AUDIENCE`` and ``OIDC_JWKS_URL`` (or
``--oidc-config FILE``) and are required; ``--insecure-no-auth`` is for a developer's laptop and
binds 127.0.0.1 only.  Every other option also reads ``TOMOSIGHT_SERVE_<OPTION>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve calibrated predictions over HTTP (LitServe, OIDC)")
    parser.add_argument("--home", type=Path, help="home folder (default: TOMOSIGHT_HOME or ./demo_home)")
    parser.add_argument("--host", help="127.0.0.1 (default), 0.0.0.0 or ::")
    parser.add_argument("--port", type=int, help="default 8000")
    parser.add_argument("--workers", type=int, help="inference processes per device (default 1)")
    parser.add_argument("--devices", type=int, help="GPUs to use with --accelerator cuda (default 1)")
    parser.add_argument("--accelerator", choices=("cpu", "cuda"), help="explicit device kind (default cpu)")
    parser.add_argument("--max-batch-size", type=int, help="dynamic batch size across requests (default 4)")
    parser.add_argument("--batch-timeout", type=float, dest="batch_timeout_s", help="seconds to fill a batch (default 0.05)")
    parser.add_argument("--request-timeout", type=float, dest="request_timeout_s", help="queue wait before a 504 (default 30)")
    parser.add_argument("--model-name", help="registered model (default tomosight-dbt)")
    parser.add_argument("--alias", dest="model_alias", help="registry alias to serve, or 'latest' (default champion)")
    parser.add_argument("--reload-interval", type=float, dest="reload_interval_s", help="seconds between alias checks (default 30)")
    parser.add_argument("--max-payload-bytes", type=int, help="largest request body in bytes (default 1 GiB)")
    parser.add_argument("--no-explain", dest="explain", action="store_const", const=False, help="no Grad-CAM overlays or ROIs")
    parser.add_argument("--audit-log", type=Path, help="also append the audit lines to this file")
    parser.add_argument("--oidc-config", type=Path, help="TOML/JSON file with the OIDC settings")
    parser.add_argument("--insecure-no-auth", action="store_const", const=True,
                        help="development only: no authentication, 127.0.0.1 only")  # fmt: skip
    parser.set_defaults(func=run)


OPTIONS = ("host", "port", "workers", "devices", "accelerator", "max_batch_size", "batch_timeout_s",
           "request_timeout_s", "model_name", "model_alias", "reload_interval_s", "max_payload_bytes", "explain",
           "audit_log", "insecure_no_auth")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from serving.app import build_server, serve
    from serving.auth import OidcConfigError, OidcSettings, TokenVerifier
    from serving.settings import ServeSettings, ServeSettingsError

    env = dict(os.environ)
    if args.home is not None:
        env["TOMOSIGHT_HOME"] = str(args.home)
    try:
        settings = ServeSettings.from_env(env, **{name: getattr(args, name) for name in OPTIONS})
        verifier = None if settings.insecure_no_auth else TokenVerifier(OidcSettings.from_env(env, args.oidc_config))
        serving = build_server(settings, verifier)
    except (ServeSettingsError, OidcConfigError) as exc:
        print(f"tomosight serve: {exc}", file=sys.stderr)
        return 2
    auth = "NO AUTHENTICATION (development)" if verifier is None else f"OIDC issuer {verifier.settings.issuer}"
    where = f"http://{settings.host}:{settings.port} ({settings.accelerator}, {settings.workers} worker(s))"
    print(f"serving {settings.model_name}@{settings.model_alias} from {settings.home} on {where}; {auth}", flush=True)
    serve(serving)
    return 0
