"""``trafficcore serve``: run the forecast API under uvicorn, on the loopback interface by default.

Why the checks happen here, before uvicorn starts: a server without tokens would either be open
to anyone who can reach the port or refuse every request, and both are better said once, on the
console, than discovered by a client. `--insecure-no-auth` opens every route for a local demo and
is refused on anything but a loopback address.

The store file is held open while requests come (`--hold-store-s` idle seconds, 2 by default):
opening it costs tens of milliseconds per connection otherwise. Another process that wants the
file (the dashboard, ``trafficcore ingest``) waits until the server has been idle that long.

Workers: each uvicorn worker is a process with its own model and cache; DuckDB lets one process
at a time hold the store file, so several workers queue on the file lock (the store retries, and a
request that still finds it locked gets 503). One worker is the tested configuration.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from trafficcore import config

_INSECURE_ENV = "TRAFFICCORE_API_INSECURE_NO_AUTH"
_PRELOAD_ENV = "TRAFFICCORE_API_PRELOAD"
_HOLD_ENV = "TRAFFICCORE_API_HOLD_STORE_S"
_LOG_ENV = "TRAFFICCORE_LOG_FORMAT"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_warning(host: str, tokens: tuple[str, ...], tls: bool) -> str | None:
    """The console warning for tokens sent in clear text: None on loopback, with TLS, or without tokens.

    Why: a bearer token crosses the network in every request; over plain HTTP on a reachable interface
    anyone on the path can read it and the forecasts, and replay it. Serving TLS (here, or in front)
    is the operator's choice, so this says so loudly and how, rather than refusing to start.
    """
    if tls or not tokens or _loopback(host):
        return None
    return (f"WARNING: serving plain HTTP on {host}, a non-loopback address: traffic is UNENCRYPTED, and the bearer "
            "tokens, readings and forecasts can be read and replayed by anyone on the network path. Put TLS in "
            "front: a reverse proxy such as nginx or Caddy terminating HTTPS and forwarding to 127.0.0.1, or serve "
            "HTTPS here with --ssl-keyfile KEY.pem --ssl-certfile CERT.pem (passed to uvicorn).")


def app_from_env():
    """uvicorn factory: the app for the store and auth mode `serve` put in the environment."""
    from trafficcore import logs
    from trafficcore.api.app import create_app

    logs.setup(os.environ.get(_LOG_ENV, "json"))
    app = create_app(config.db_path(), insecure_no_auth=os.environ.get(_INSECURE_ENV) == "1",
                     hold_store_s=float(os.environ.get(_HOLD_ENV, "2")))
    if os.environ.get(_PRELOAD_ENV) == "1":
        cache = app.state.cache
        for name in cache.datasets():
            cache.model(name)
            cache.panel(name)
    return app


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (loopback by default)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    db: Path | None = typer.Option(None, "--db", help="DuckDB store (default: $TRAFFICCORE_DB or data/)"),
    workers: int = typer.Option(1, "--workers", min=1, max=16, help="uvicorn worker processes (1 is tested)"),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="no token needed on any route: local demos only (loopback hosts only)"
    ),
    preload: bool = typer.Option(False, "--preload", help="load every dataset's model before serving"),
    hold_store_s: float = typer.Option(
        2.0, "--hold-store-s", min=0.0,
        help="keep the store file open this many idle seconds after a request (faster; other processes wait)",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
    log_format: str = typer.Option("json", "--log-format",
                                   help="json: one JSON object per line for every request and ingest (uvicorn's own "
                                        "access log off); text: plain lines"),
    ssl_keyfile: Path | None = typer.Option(None, "--ssl-keyfile", help="TLS private key (PEM): serve HTTPS"),
    ssl_certfile: Path | None = typer.Option(None, "--ssl-certfile", help="TLS certificate chain (PEM): serve HTTPS"),
) -> None:
    """Serve the forecast API (FastAPI + uvicorn); tokens from TRAFFICCORE_API_TOKENS or the config."""
    import uvicorn

    from trafficcore.api.auth import check_tokens

    try:
        tokens = check_tokens(config.api_tokens())
    except (ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if not tokens and not insecure_no_auth:
        typer.echo("error: no API tokens configured: set TRAFFICCORE_API_TOKENS (comma-separated) or "
                   "TRAFFICCORE_API_TOKENS_FILE, or pass --insecure-no-auth for a local demo", err=True)
        raise typer.Exit(2)
    if insecure_no_auth and not _loopback(host):
        typer.echo(f"error: --insecure-no-auth is refused on {host}: use a loopback address or configure tokens",
                   err=True)
        raise typer.Exit(2)
    if log_format not in ("json", "text"):
        typer.echo(f"error: --log-format must be json or text, not {log_format!r}", err=True)
        raise typer.Exit(2)
    if (ssl_keyfile is None) != (ssl_certfile is None):
        typer.echo("error: give both --ssl-keyfile and --ssl-certfile to serve HTTPS", err=True)
        raise typer.Exit(2)
    for tls_file in (ssl_keyfile, ssl_certfile):
        if tls_file is not None and not tls_file.is_file():
            typer.echo(f"error: no such file: {tls_file}", err=True)
            raise typer.Exit(2)
    tls = ssl_certfile is not None
    warning = plain_http_warning(host, tokens, tls)
    if warning:
        typer.echo(warning, err=True)
    path = config.db_path(db)
    if not path.exists():
        typer.echo(f"error: no store at {path} (import data first, e.g. `trafficcore demo --db {path}`)", err=True)
        raise typer.Exit(2)
    os.environ["TRAFFICCORE_DB"] = str(path.resolve())
    os.environ[_INSECURE_ENV] = "1" if insecure_no_auth else "0"
    os.environ[_PRELOAD_ENV] = "1" if preload else "0"
    if workers > 1 and hold_store_s > 0:
        typer.echo("note: --workers > 1: not holding the store open (--hold-store-s 0), so workers can share it")
        hold_store_s = 0.0
    os.environ[_HOLD_ENV] = str(hold_store_s)
    os.environ[_LOG_ENV] = log_format
    mode = "WITHOUT AUTHENTICATION (--insecure-no-auth)" if insecure_no_auth else f"{len(tokens)} token(s)"
    scheme = "https" if tls else "http"
    typer.echo(f"serving {path} on {scheme}://{host}:{port} ({mode}); OpenAPI at /docs and /openapi.json")
    uvicorn.run("trafficcore.api.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=log_format != "json", ssl_keyfile=str(ssl_keyfile) if tls else None,
                ssl_certfile=str(ssl_certfile) if tls else None)
