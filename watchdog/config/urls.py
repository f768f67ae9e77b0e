"""Credentials never live inside URLs or plain headers in a config file. Stage: config edge.

A URL with `user:pass@` or a query parameter such as `?token=` / `key=` / `sig=` carries a secret that
then leaks into logs, `last_error` and `check` output; an `Authorization` or `X-Api-Key` header under
plain `headers:` does the same. `url_problem` and `header_problem` say why such a value is refused
and where the secret belongs instead (`*_env` / `*_file`, `secret_headers`); the receiver, target and
policy models call them, and so can any other validator (the `http_call` step's model). This module
must never include the offending value (or any part of a credential) in the text it returns.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

SECRET_QUERY_KEYS = frozenset(
    {
        "token", "access_token", "auth", "auth_token", "key", "api_key", "apikey", "api-key", "secret",
        "client_secret", "password", "passwd", "pwd", "sig", "signature", "code", "x-amz-signature",
        "x-goog-signature", "private_token",
    }
)
"""Query parameter names (lower case) whose values are credentials."""

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-auth-token", "cookie",
     "x-vault-token", "private-token"}
)
"""Header names (lower case) whose values are credentials."""


def url_problem(url: str, *, secret_field: str = "url_env or url_file") -> str | None:
    """Why `url` cannot be written in a config file (None when it can). Never repeats the URL."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return "is not a valid URL (bad host or port)"
    if not parts.hostname:
        return "has no host name"
    if parts.username is not None or parts.password is not None:
        return f"holds credentials (user:password@): move the whole URL to {secret_field}"
    for name, _value in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in SECRET_QUERY_KEYS:
            return f"holds a credential in its query ('{name}='): move the whole URL to {secret_field}"
    return None


def secret_url_problem(url: str) -> str | None:
    """Why a URL read from a secret (`url_env` / `url_file`) cannot be used (None when it can). Credentials
    are allowed there (that is where they belong); the text never repeats the URL."""
    if not url.startswith(("http://", "https://")):
        return "the URL does not start with http:// or https://"
    if any(c.isspace() for c in url):
        return "the URL contains white space"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "the URL is not valid (bad host or port)"
    if not parts.hostname:
        return "the URL has no host name"
    return None


def header_problem(name: str, *, secret_field: str = "secret_headers") -> str | None:
    """Why header `name` cannot have a plain value in a config file (None when it can)."""
    if name.lower() in SECRET_HEADERS:
        return f"header {name!r} carries a credential: give it under {secret_field} (an env variable or a file)"
    return None


def check_url(url: str, *, secret_field: str = "url_env or url_file") -> str:
    """`url`, or ValueError with `url_problem`'s text (for pydantic validators)."""
    why = url_problem(url, secret_field=secret_field)
    if why is not None:
        raise ValueError(why)
    return url


__all__ = [
    "SECRET_HEADERS",
    "SECRET_QUERY_KEYS",
    "check_url",
    "header_problem",
    "secret_url_problem",
    "url_problem",
]
