"""Credentials inside URLs and inline auth headers are refused, pointing to *_env/*_file, without echoing them."""

from __future__ import annotations

import pytest

from watchdog.config import load_text
from watchdog.config.urls import header_problem, secret_url_problem, url_problem
from watchdog.errors import ConfigError

BASE = "targets:\n  - name: vllm\n    base_url: {url}\n    model: m\n"
SECRET = "s3cr3tV4lue"


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        load_text(text, file="w.yaml")
    return "\n".join(str(p) for p in ei.value.problems)


@pytest.mark.parametrize(
    "receiver",
    [
        f"{{name: w, type: webhook, url: 'https://user:{SECRET}@hooks.example.com/x'}}",
        f"{{name: w, type: webhook, url: 'https://hooks.example.com/x?token={SECRET}'}}",
        f"{{name: w, type: webhook, url: 'https://hooks.example.com/x?a=1&sig={SECRET}'}}",
        f"{{name: p, type: pagerduty, routing_key_env: K, url: 'https://proxy.example.com/?key={SECRET}'}}",
        f"{{name: a, type: alertmanager, urls: ['http://am:9093', 'http://u:{SECRET}@am2:9093']}}",
    ],
)
def test_receiver_urls_with_credentials_are_refused(receiver: str) -> None:
    """A receiver URL with user:pass@ or a credential query parameter fails check, naming where it belongs."""
    text = BASE.format(url="http://127.0.0.1:8000") + f"notify:\n  receivers:\n    - {receiver}\n"
    out = problems(text)
    assert "holds" in out and ("url_env or url_file" in out or "_env" in out)
    assert SECRET not in out


def test_target_base_url_with_credentials_is_refused() -> None:
    """A base_url carrying user:password is refused and points to api_key_env/api_key_file."""
    out = problems(BASE.format(url=f"http://admin:{SECRET}@127.0.0.1:8000"))
    assert "targets[0].base_url: holds credentials (user:password@): move the whole URL to api_key_env or " \
           "api_key_file" in out
    assert SECRET not in out


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "proxy-authorization", "Cookie"])
def test_inline_auth_headers_are_refused(header: str) -> None:
    """A credential header under plain `headers` is refused and points to secret_headers."""
    text = BASE.format(url="http://127.0.0.1:8000") + (
        "notify:\n  receivers:\n    - name: w\n      type: webhook\n      url: https://hooks.example.com/x\n"
        f"      headers: {{{header}: 'Bearer {SECRET}'}}\n")
    out = problems(text)
    assert f"w.yaml:10: notify.receivers[0].headers: header '{header}' carries a credential: give it under " \
           f"secret_headers ({header}: {{env: NAME}} or {{file: PATH}})" in out
    assert SECRET not in out


def test_secret_headers_and_plain_urls_are_accepted() -> None:
    """The allowed shapes load: a plain URL, a non-secret header, and the credential under secret_headers."""
    text = BASE.format(url="http://127.0.0.1:8000") + (
        "notify:\n  receivers:\n    - name: w\n      type: webhook\n      url: https://hooks.example.com/x?team=ml\n"
        "      headers: {X-Team: ml}\n      secret_headers: {Authorization: {env: HOOK_AUTH}}\n")
    cfg = load_text(text)
    assert cfg.notify.receivers[0].name == "w"


def test_validators_are_usable_by_other_models() -> None:
    """The policy models can call the same functions: they say why, or None for a clean value."""
    assert url_problem("https://h.example.com/reset") is None
    assert url_problem(f"https://h.example.com/reset?api_key={SECRET}") is not None
    assert SECRET not in str(url_problem(f"https://u:{SECRET}@h/"))
    assert header_problem("Authorization") is not None and header_problem("X-Request-Id") is None
    assert secret_url_problem(f"https://hooks.slack.com/services/{SECRET}") is None  # a secret may hold one
    assert secret_url_problem("http://exa mple.com/") == "the URL contains white space"
    assert secret_url_problem("http://example.com:port/") == "the URL is not valid (bad host or port)"


def test_breaker_url_with_credentials_is_refused() -> None:
    """The breaker's metrics URL may not carry credentials either."""
    out = problems(BASE.format(url="http://127.0.0.1:8000") + "    detectors:\n      breaker:\n"
                   f"        url: 'http://127.0.0.1:9100/metrics?token={SECRET}'\n")
    assert "w.yaml:7: targets[0].detectors.breaker.url: holds a credential in its query ('token=')" in out
    assert SECRET not in out
