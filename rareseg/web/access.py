"""Access token: when the app has one, every route (page, static files, API, job files) needs it.

A request carries the token in one of three ways:

- ``Authorization: Bearer <token>`` (scripts, ``curl -H``);
- ``?token=<token>`` in the URL (once, to open the page: ``GET /?token=...`` answers 303 to ``/``
  with a cookie, so the token leaves the address bar and the page's own requests carry the cookie);
- the cookie :data:`COOKIE` (``HttpOnly``, ``SameSite=Strict``), which holds a SHA-256 digest of the
  token, never the token itself.

Anything else gets 401 with a one-line JSON error.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, Response, abort, redirect, request

#: Cookie set by ``GET /?token=``.
COOKIE = "rareseg_token"
#: Query parameter carrying the token.
PARAMETER = "token"
#: Message of every 401 answer.
REFUSED = "access token missing or wrong: open the page as /?token=<token> or send 'Authorization: Bearer <token>'"


def cookie_value(token: str) -> str:
    """What the cookie holds for ``token``: its SHA-256 digest in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _bearer() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def require_token(app: Flask, token: str) -> None:
    """Make every request of ``app`` carry ``token`` (401 otherwise); ``/?token=`` sets the page's cookie."""
    digest = cookie_value(token)

    @app.before_request
    def check_token() -> Response | None:
        from_url = request.args.get(PARAMETER)
        if _matches(from_url, token):
            if request.method == "GET" and request.path == "/":
                response = redirect("/", code=303)
                response.set_cookie(COOKIE, digest, httponly=True, samesite="Strict", path="/")
                return response
            return None
        if _matches(_bearer(), token) or _matches(request.cookies.get(COOKIE), digest):
            return None
        abort(401, description=REFUSED)
