"""Alertmanager payload mapping (watchdog/web/ingress.py) and the bearer token (watchdog/web/auth.py), without
a daemon: label → target/kind/severity rules, refusals naming the alert, and a token that is compared in
constant time and never shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from watchdog.config.models import AlertmanagerIngress, AuthConfig
from watchdog.errors import ConfigError
from watchdog.web.auth import load_token
from watchdog.web.ingress import IngressError, findings_from, snake

TARGETS = {"vllm-a": "http://10.0.0.5:8000", "vllm-b": "https://gpu2.local:7654"}


def payload(*alerts: dict[str, Any]) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "alerts": list(alerts)}).encode()


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": labels, "annotations": {"description": "d"}, "fingerprint": "f1"}


def test_snake_case_kinds() -> None:
    """Alert names become snake_case kinds."""
    assert snake("VllmEngineDead") == "vllm_engine_dead"
    assert snake("KV-Cache Full") == "kv_cache_full"
    assert snake("gpu_oom") == "gpu_oom"


def test_mapping_defaults_and_overrides() -> None:
    """`target` label or an `instance` equal to a base_url's host:port names the target; the kinds map wins
    over snake_case; severity labels map to P0..P3 (unknown → default); resolved alerts clear."""
    cfg = AlertmanagerIngress(kinds={"VllmDown": "service_down"})
    fs = findings_from(payload(alert(alertname="VllmDown", instance="10.0.0.5:8000", severity="critical"),
                               alert(alertname="DiskAlmostFull", target="vllm-b", severity="weird"),
                               alert("resolved", alertname="HighLatency", instance="gpu2.local:7654",
                                     severity="High")), cfg, TARGETS)
    assert [(f.target, f.kind, f.severity.value, f.active) for f in fs] == [
        ("vllm-a", "service_down", "P0", True), ("vllm-b", "disk_almost_full", "P2", True),
        ("vllm-b", "high_latency", "P1", False)]
    assert fs[0].summary == "d" and fs[0].source == "alertmanager" and fs[0].labels == {"alertmanager": "f1"}
    assert fs[0].fingerprint != fs[1].fingerprint


@pytest.mark.parametrize(("raw", "status", "text"), [
    (b"{", 400, "not valid JSON"),
    (b"[]", 400, "JSON object"),
    (json.dumps({"version": "3", "alerts": []}).encode(), 422, "version '3'"),
    (json.dumps({"version": "4", "alerts": {}}).encode(), 400, "alerts: must be a list"),
    (payload(alert(alertname="X", target="nope")), 422, "alerts[0]: no known target"),
    (payload(alert(target="vllm-a")), 422, "alerts[0].labels.alertname: missing"),
    (payload(alert(alertname="X", target="vllm-a"), {"status": "maybe"}), 400, "alerts[1].status"),
    (payload(alert(alertname="!!!", target="vllm-a")), 422, "no usable kind"),
    (json.dumps({"version": "4", "alerts": [alert(alertname="X", target="vllm-a")] * 1001}).encode(), 413,
     "1001 alerts"),
])
def test_refusals_name_the_alert(raw: bytes, status: int, text: str) -> None:
    """Each malformed payload is refused as a whole with a status and a message naming what is wrong."""
    with pytest.raises(IngressError) as e:
        findings_from(raw, AlertmanagerIngress(), TARGETS)
    assert e.value.status == status and text in str(e.value)


def test_token_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token is read from token_file or token_env, compared only as `Bearer <token>`, and never shown."""
    assert load_token(AuthConfig()) is None
    f = tmp_path / "tok"
    f.write_text("s3cret-token-value\n")
    tok = load_token(AuthConfig(token_file=f, token_name="ops"))
    assert tok is not None and tok.name == "ops"
    assert tok.check("Bearer s3cret-token-value") and tok.check("bearer  s3cret-token-value ")
    for bad in ("", "s3cret-token-value", "Basic s3cret-token-value", "Bearer s3cret-token-valu",
                "Bearer s3cret-token-value2", "Bearer"):
        assert not tok.check(bad), bad
    assert "s3cret" not in repr(tok) and "s3cret" not in str(tok)
    monkeypatch.setenv("WD_WEB_TOKEN_TEST", "env-token-1")
    tok2 = load_token(AuthConfig(token_env="WD_WEB_TOKEN_TEST"))
    assert tok2 is not None and tok2.check("Bearer env-token-1")


def test_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    """A token_file that does not exist stops the start with a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=r"auth\.token_file"):
        load_token(AuthConfig(token_file=tmp_path / "missing"))
