"""Bearer-token check for the write endpoints. Stage: operator edge.

The token comes from `auth.token_file` or `auth.token_env` (read once, registered for redaction) and is
compared in constant time (`hmac.compare_digest`). Without a configured token there is no token and the
write endpoints do not exist. This module must never log or return the token or the presented value.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from watchdog.config.models import AuthConfig
from watchdog.secrets import Secret, resolve_secret


@dataclass(frozen=True, slots=True)
class Token:
    """The configured bearer token and the name written into history for its holder."""

    name: str
    secret: Secret

    def check(self, authorization: str) -> bool:
        """True when the `Authorization` header carries this token as `Bearer <token>`."""
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        return hmac.compare_digest(presented.strip().encode(), self.secret.reveal().encode())


def load_token(auth: AuthConfig) -> Token | None:
    """The configured token, or None when neither `token_file` nor `token_env` is set. Raises ConfigError
    (naming the field, never the value) when the file or variable is missing or empty."""
    if auth.token_file is None and auth.token_env is None:
        return None
    secret = resolve_secret(auth.token_env, auth.token_file, field="auth.token", source="config")
    return Token(name=auth.token_name, secret=secret)
