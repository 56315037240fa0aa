"""Bearer-token authentication for every route but /health (whose details need a token too, see `authorised`).

Tokens come from ``TRAFFICCORE_API_TOKENS`` (comma-separated), else from the file named by
``TRAFFICCORE_API_TOKENS_FILE`` (one per line), else from `trafficcore.config.API_TOKENS` (see
`trafficcore.config.api_tokens`). Why constant time over *all* tokens: comparing with ``==`` or
stopping at the first match lets response timing tell an attacker how much of a guess was right,
or which token slot matched; `hmac.compare_digest` against every configured token takes the same
time whatever the guess.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

#: Shortest token accepted from configuration: a guessable token is no protection.
MIN_TOKEN_LENGTH = 16

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`; tokens are set by the operator")


class Unauthorized(Exception):
    """Missing or wrong token: answered with 401 and a `WWW-Authenticate: Bearer` header."""


def check_tokens(tokens: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Strip and validate configured tokens; raises ValueError with a message an operator can act on."""
    clean = tuple(t.strip() for t in tokens if t and t.strip())
    short = [t for t in clean if len(t) < MIN_TOKEN_LENGTH]
    if short:
        raise ValueError(f"API tokens must be at least {MIN_TOKEN_LENGTH} characters; {len(short)} configured "
                         "token(s) are shorter (generate one with `python -c \"import secrets; "
                         "print(secrets.token_urlsafe(32))\"`)")
    return clean


def token_matches(given: str, tokens: tuple[str, ...]) -> bool:
    """True when `given` equals one of `tokens`; compares against every token in constant time."""
    given_b = given.encode("utf-8", "surrogateescape")
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(given_b, t.encode("utf-8", "surrogateescape"))
    return ok


async def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """FastAPI dependency: passes when auth is off or the bearer token matches (async: no threadpool hop)."""
    tokens: tuple[str, ...] | None = request.app.state.tokens
    if tokens is None:  # --insecure-no-auth
        return
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if not token_matches(credentials.credentials, tokens):
        raise Unauthorized("invalid bearer token")


def authorised(request: Request) -> bool:
    """True when the request may see details: auth is off (loopback demos), or it carries a valid bearer token.

    Why /health asks this instead of depending on `require_token`: a load balancer's probe must get
    its answer without a token, but the store's path and the dataset names tell an outsider more about
    the server than "ok"; read from the header by hand so /health stays documented as open.
    """
    tokens: tuple[str, ...] | None = request.app.state.tokens
    if tokens is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(given.strip()) and token_matches(given.strip(), tokens)
