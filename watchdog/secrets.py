"""Secret values: resolution from env/file, a redacting wrapper and a process-wide redactor. Stage: config edge.

Secrets (webhook URLs, routing keys, SMTP passwords, signing keys) are named in config by `<name>_env`
(an environment variable) or `<name>_file` (a path), never inline. `resolve_secret` reads one, wraps it
in `Secret` (whose repr/str/format is `***`) and registers the value with the process-wide
`SecretRegistry`, so that `redact()` and the structlog processor `redact_processor` can scrub it from
any text that reaches a log, an error or a stored row; `redact_data` does the same for structured
values (action output, details) before they are stored. `child_env` builds the minimal environment of
a child process, so the daemon's secrets reach a child only when a config names them. This module must
never log, print or put a secret value (or any part of it) into an exception message.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from watchdog.errors import ConfigError, Problem

REDACTED = "***"
# Values shorter than this are not registered: redacting every "ab" in every log line would destroy logs
# without protecting anything real (no real credential is that short).
MIN_SECRET_LEN = 4
# Keys whose values are always redacted in log events, whatever the value is.
SENSITIVE_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "routing_key",
        "authorization",
        "webhook_url",
        "signing_secret",
        "integration_key",
    }
)


class Secret:
    """A secret string. `str()`, `repr()` and `format()` give `***`; only `.reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret must not be pickled or serialised")


def _variants(value: str) -> set[str]:
    """The forms a secret takes on its way into logs: raw, URL-quoted, JSON-escaped, URL parts."""
    out = {value, quote(value, safe=""), quote(value, safe="/:"), quote_plus(value), json.dumps(value)[1:-1]}
    unq = unquote(value)
    if unq != value:
        out.add(unq)
    if "://" in value:
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if parts is not None:
            # The credential of a webhook URL is its path/query (Slack: /services/T…/B…/token).
            tail = parts.path + (("?" + parts.query) if parts.query else "")
            if len(tail) >= 8 and tail not in ("/", ""):
                out.add(tail)
                if parts.path.count("/") >= 2:
                    out.add(parts.path.rstrip("/").rsplit("/", 1)[-1])
            if parts.password:
                out.add(parts.password)
            if parts.query:
                for kv in parts.query.split("&"):
                    _, _, v = kv.partition("=")
                    if len(v) >= MIN_SECRET_LEN:
                        out.add(v)
    return {v for v in out if len(v) >= MIN_SECRET_LEN}


class SecretRegistry:
    """Every secret value known to this process; `redact(text)` replaces each with `***`. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: str | Secret) -> None:
        raw = value.reveal() if isinstance(value, Secret) else value
        if not raw or len(raw) < MIN_SECRET_LEN:
            return
        with self._lock:
            new = _variants(raw) - self._values
            if not new:
                return
            self._values |= new
            alternatives = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))

    def clear(self) -> None:
        """Forget every value (tests only)."""
        with self._lock:
            self._values.clear()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._values)

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(REDACTED, text)


REGISTRY = SecretRegistry()


def register_secret(value: str | Secret) -> None:
    """Make `redact()` scrub this value from now on (resolve_secret does this for you)."""
    REGISTRY.register(value)


def redact(text: str) -> str:
    """Replace every known secret value (and its URL-quoted/JSON/URL-part forms) in `text` with `***`."""
    return REGISTRY.redact(text)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return REGISTRY.redact(value)
    if isinstance(value, Secret):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 6:
        return value
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and k.lower() in SENSITIVE_KEYS else _redact_value(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        # exc_info is rendered later by format_exc_info; the message is what can carry a value.
        text = str(value)
        clean = REGISTRY.redact(text)
        return value if clean == text else f"{type(value).__name__}: {clean}"
    try:
        text = str(value)
    except Exception:
        return value
    clean = REGISTRY.redact(text)
    return value if clean == text else clean


def redact_processor(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: scrub known secret values from every value (recursively) and blank values
    of sensitive keys (`password`, `routing_key`, `webhook_url`, …). Place it after `format_exc_info`
    and before the renderer."""
    for key in list(event_dict):
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


class RedactFilter(logging.Filter):
    """stdlib logging filter for foreign loggers (httpx logs the full request URL at INFO, and a Slack
    webhook URL *is* the secret): renders the message once and scrubs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if len(REGISTRY) == 0:
            return True
        try:
            msg = record.getMessage()
        except Exception:
            return True
        clean = REGISTRY.redact(msg)
        if clean != msg:
            record.msg = clean
            record.args = None
        return True


def redact_data(value: Any) -> Any:
    """`value` (str, mapping, list, exception, ...) with every known secret value replaced by `***` and
    every value under a sensitive key (`password`, `token`, ...) blanked. Use before storing anything
    a child process, a remote server or an exception produced."""
    return _redact_value(value)


def is_secret_value(value: str) -> bool:
    """True when `value` contains a registered secret value (or one of its quoted/URL forms)."""
    return bool(value) and REGISTRY.redact(value) != value


# What a child process (the spawned server, an `exec` step) gets from the daemon's environment
# without asking: enough to find programs and speak the locale. Everything else must be named.
BASE_ENV_NAMES = ("PATH", "LANG", "LANGUAGE", "HOME", "TZ")


def child_env(
    *,
    pass_env: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The minimal environment of a child process: PATH, LANG/LANGUAGE/LC_*, HOME, TZ from the daemon's
    environment, the variables named in `pass_env` (copied when set), then `env` (declared values).

    The daemon's own secrets never reach a child unless named: a base or `LC_*` variable whose value
    holds a registered secret is dropped; a name listed in `pass_env` or `env` is passed as declared.
    """
    src = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for k, v in src.items():
        if (k in BASE_ENV_NAMES or k.startswith("LC_")) and not is_secret_value(v):
            out[k] = v
    out.setdefault("PATH", os.defpath)
    for name in pass_env:
        if name in src:
            out[name] = src[name]
    out.update(env or {})
    return out


def _problem(source: str, field: str, message: str, fix: str) -> ConfigError:
    return ConfigError([Problem(file=source, line=None, field=field, message=message, fix=fix)])


def resolve_secret(
    env: str | None,
    file: str | Path | None,
    *,
    field: str,
    base_dir: Path | None = None,
    source: str = "config",
    environ: Mapping[str, str] | None = None,
) -> Secret:
    """Read the secret named by `<field>_env` (an environment variable name) or `<field>_file` (a path,
    relative paths resolved against `base_dir`). Exactly one must be given. The value is stripped of
    surrounding whitespace (a trailing newline in a file is normal), registered for redaction and
    returned wrapped. Raises `ConfigError` naming `source`, the field and the fix; never the value.
    """
    env_field, file_field = f"{field}_env", f"{field}_file"
    if env and file:
        raise _problem(source, field, f"both {env_field} and {file_field} are set", "keep only one of them")
    if not env and not file:
        raise _problem(
            source,
            field,
            "secret is missing",
            f"set {env_field} to the name of an environment variable, or {file_field} to a file holding it",
        )
    if env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise _problem(
                source,
                env_field,
                f"{env!r} is not an environment variable name",
                "give the variable's NAME (e.g. SLACK_WEBHOOK_URL), never the secret itself",
            )
        value = (environ if environ is not None else os.environ).get(env)
        if value is None:
            raise _problem(
                source,
                env_field,
                f"environment variable {env} is not set",
                f"export {env} in the daemon's environment (systemd: EnvironmentFile=) or use {file_field}",
            )
        value = value.strip()
        if not value:
            raise _problem(source, env_field, f"environment variable {env} is empty", f"put the secret in {env}")
    else:
        assert file is not None
        path = Path(file).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise _problem(
                source, file_field, f"file {path} does not exist", "create it (mode 0600) or fix the path"
            ) from None
        except PermissionError:
            raise _problem(
                source,
                file_field,
                f"file {path} is not readable by this user",
                "make it readable by the watchdog's user (chmod 0640, group of the daemon)",
            ) from None
        except IsADirectoryError:
            raise _problem(source, file_field, f"{path} is a directory", "point to the file itself") from None
        except OSError as exc:
            raise _problem(
                source, file_field, f"file {path} cannot be read ({exc.strerror})", "fix the path or permissions"
            ) from None
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise _problem(source, file_field, f"file {path} is not UTF-8 text", "store the secret as text") from None
        if not value:
            raise _problem(source, file_field, f"file {path} is empty", "write the secret into it")
    register_secret(value)
    return Secret(value)


def decode_whsec(secret: Secret, *, field: str = "secret", source: str = "config") -> bytes:
    """Key bytes of a Standard Webhooks secret `whsec_<base64>` (the prefix is optional)."""
    raw = secret.reveal().removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (ValueError, TypeError):
        key = b""
    if len(key) < 16:
        raise _problem(
            source,
            field,
            "signing secret is not 'whsec_' followed by base64 of at least 16 bytes",
            "generate one: python -c 'import base64,os;print(\"whsec_\"+base64.b64encode(os.urandom(32)).decode())'",
        )
    return key


__all__ = [
    "REDACTED",
    "REGISTRY",
    "RedactFilter",
    "Secret",
    "SecretRegistry",
    "child_env",
    "decode_whsec",
    "is_secret_value",
    "redact",
    "redact_data",
    "redact_processor",
    "register_secret",
    "resolve_secret",
]
