"""Secrets: resolution from env/file with clear errors, the redacting wrapper and the log redactor."""

from __future__ import annotations

import logging
import os
import pickle

import pytest
import structlog

from watchdog.errors import ConfigError
from watchdog.secrets import REGISTRY, RedactFilter, Secret, redact, redact_processor, resolve_secret

VALUE = "s3cr3t-value-abcdef"


def test_secret_never_renders_its_value():
    """str, repr, f-strings and format specs of a Secret all give ***; reveal() gives the value."""
    s = Secret(VALUE)
    assert str(s) == repr(s) == f"{s}" == f"{s:>30}" == "***"
    assert f"{[s]}" == "[***]"
    assert s.reveal() == VALUE
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_resolve_from_env_strips_and_registers(monkeypatch):
    """An env var is read, stripped, and afterwards redact() hides it."""
    monkeypatch.setenv("WD_TEST_SECRET", f"  {VALUE}\n")
    s = resolve_secret("WD_TEST_SECRET", None, field="notify.receivers.x.token")
    assert s.reveal() == VALUE
    assert redact(f"token={VALUE}!") == "token=***!"


def test_resolve_from_relative_file(tmp_path):
    """A relative *_file resolves against base_dir and a trailing newline is dropped."""
    (tmp_path / "key").write_text(VALUE + "\n")
    assert resolve_secret(None, "key", field="k", base_dir=tmp_path).reveal() == VALUE


@pytest.mark.parametrize(
    ("env", "file", "envval", "needle"),
    [
        (None, None, None, "set k_env to the name of an environment variable, or k_file"),
        ("WD_TEST_UNSET", None, None, "k_env: environment variable WD_TEST_UNSET is not set"),
        ("WD_TEST_EMPTY", None, "  ", "k_env: environment variable WD_TEST_EMPTY is empty"),
        ("WD_A", "/x", None, "both k_env and k_file are set"),
        ("https://hooks.slack.com/x", None, None, "is not an environment variable name"),
    ],
)
def test_resolve_errors_name_field_and_fix(monkeypatch, env, file, envval, needle):
    """Missing/empty/ambiguous secrets raise ConfigError naming the field and what to do."""
    monkeypatch.delenv("WD_TEST_UNSET", raising=False)
    if envval is not None:
        monkeypatch.setenv(env, envval)
    with pytest.raises(ConfigError) as ei:
        resolve_secret(env, file, field="k", source="/etc/vllm-watchdog/watchdog.yaml")
    assert needle in str(ei.value)
    assert str(ei.value).startswith("/etc/vllm-watchdog/watchdog.yaml: ")


def test_file_errors_never_contain_the_value(tmp_path):
    """Unreadable, empty and missing files give errors with the path, never file content."""
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_secret(None, empty, field="k")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_secret(None, tmp_path / "missing", field="k")
    with pytest.raises(ConfigError, match="is a directory"):
        resolve_secret(None, tmp_path, field="k")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked"
        locked.write_text(VALUE)
        locked.chmod(0)
        with pytest.raises(ConfigError, match="not readable") as ei:
            resolve_secret(None, locked, field="k")
        assert VALUE not in str(ei.value)


def test_url_secret_is_redacted_in_its_other_forms():
    """A webhook URL is hidden raw, URL-quoted, and by its token path (as httpx would log it)."""
    url = "https://hooks.slack.com/services/T0AAA/B0BBB/tokenTOKENtoken"
    REGISTRY.register(url)
    assert "tokenTOKENtoken" not in redact(f"HTTP Request: POST {url} 404")
    assert "tokenTOKENtoken" not in redact("https%3A%2F%2Fhooks.slack.com%2Fservices%2FT0AAA%2FB0BBB%2FtokenTOKENtoken")
    assert "tokenTOKENtoken" not in redact("POST /services/T0AAA/B0BBB/tokenTOKENtoken HTTP/1.1")
    assert redact("hooks.slack.com is fine") == "hooks.slack.com is fine"


def test_short_values_are_not_registered():
    """Values shorter than 4 characters are ignored (they would redact ordinary words)."""
    REGISTRY.register("ab")
    assert redact("abc ab") == "abc ab"


def test_structlog_processor_redacts_values_nested_and_sensitive_keys():
    """redact_processor scrubs known values anywhere in the event and blanks sensitive keys."""
    REGISTRY.register(VALUE)
    with structlog.testing.capture_logs(processors=[redact_processor]) as cap:
        structlog.get_logger().warning(
            f"failed with {VALUE}",
            nested={"a": [f"x{VALUE}y", 3]},
            password="whatever",
            secret=Secret("zzzz-other"),
            exc=RuntimeError(f"boom {VALUE}"),
        )
    [e] = cap
    assert VALUE not in repr(e)
    assert e["event"] == "failed with ***"
    assert e["nested"] == {"a": ["x***y", 3]}
    assert e["password"] == "***" and e["secret"] == "***"
    assert e["exc"] == "RuntimeError: boom ***"


def test_stdlib_filter_redacts_foreign_log_records(caplog):
    """RedactFilter scrubs secrets from stdlib records such as httpx's request log line."""
    REGISTRY.register(VALUE)
    logger = logging.getLogger("wd-test-httpx")
    logger.addFilter(RedactFilter())
    with caplog.at_level(logging.INFO, logger="wd-test-httpx"):
        logger.info('HTTP Request: %s %s "%s"', "POST", f"https://x.example/{VALUE}", "HTTP/1.1 200 OK")
    assert VALUE not in caplog.text and "***" in caplog.text
