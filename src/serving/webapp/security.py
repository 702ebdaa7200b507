"""Session and CSRF checks of the web app.

With the service's token configured (``CUSTOMER360_API_TOKEN``), a browser signs in once with
the token and gets an HttpOnly, SameSite=Strict session cookie holding an HMAC of the token
(the token itself never goes into a cookie). Every POST form carries a CSRF token that must
equal the ``c360_csrf`` cookie (double submit; the cookie is SameSite=Strict too).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from customer360.serving.schemas import SERVING_CONFIG

SESSION_COOKIE = "c360_session"
CSRF_COOKIE = "c360_csrf"
CSRF_FIELD = "csrf_token"
COOKIE_OPTIONS = {"httponly": True, "samesite": "strict", "path": "/app"}


def configured_token() -> str:
    """The service token, or '' when the service runs without one (loopback only)."""
    return os.environ.get(SERVING_CONFIG.token_env_var, "")


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"customer360-webapp-session", hashlib.sha256).hexdigest()


def has_session(cookie: str | None) -> bool:
    """True when no token is configured or the cookie proves the token was entered."""
    token = configured_token()
    if not token:
        return True
    return bool(cookie) and hmac.compare_digest(cookie, session_value(token))


def token_matches(given: str) -> bool:
    token = configured_token()
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(cookie: str | None, form_value: str | None) -> bool:
    return bool(cookie) and bool(form_value) and hmac.compare_digest(cookie, form_value)
