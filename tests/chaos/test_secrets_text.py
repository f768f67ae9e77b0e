"""Target-supplied text cannot drive the operator's terminal, and the secret helpers keep values out of what
is stored or handed to children: safe_text escapes controls, the CLI prints a hostile summary escaped,
redact_data scrubs nested values, child_env is minimal, and a server's own log line loses the API key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from chaos.daemon_proc import ROOT

from watchdog.adapters.process import ProcessRuntime, ProcessRuntimeSettings
from watchdog.incidents import IncidentManager
from watchdog.model import Finding, Severity
from watchdog.secrets import REDACTED, child_env, is_secret_value, redact_data, register_secret
from watchdog.store import Store
from watchdog.textsafe import safe_data, safe_json, safe_text

pytestmark = pytest.mark.timeout(60)

HOSTILE = "ok\x1b[2J\x1b]52;c;ZXZpbA==\x07\rfake line\u202eevil\x9b31m"


def test_safe_text_escapes_every_control() -> None:
    """ESC, BEL, CR, C1 and bidi overrides become visible escapes; printable text stays in place."""
    out = safe_text(HOSTILE)
    assert out == "ok\\x1b[2J\\x1b]52;c;ZXZpbA==\\x07\\x0dfake line\\u202eevil\\x9b31m"
    assert safe_text("a\tb\nc", multiline=True) == "a\tb\nc" and safe_text("a\nb") == "a\\x0ab"
    assert safe_data({"k\x1b": ["v\x07", 3]}) == {"k\\x1b": ["v\\x07", 3]}
    raw = json.dumps({"s": HOSTILE}, ensure_ascii=False)
    assert json.loads(safe_json(raw)) == {"s": HOSTILE}
    assert not any(c in safe_json(raw) for c in "\x1b\x07\x9b\u202e")


def test_redact_data_and_secret_values() -> None:
    """Registered values vanish from nested data; sensitive keys are blanked whatever their value."""
    value = "tok-" + "a1b2c3d4e5f6"
    register_secret(value)
    doc = redact_data({"output": f"key={value}\n", "nested": [{"x": f"Bearer {value}"}], "password": "short"})
    assert doc == {"output": f"key={REDACTED}\n", "nested": [{"x": f"Bearer {REDACTED}"}], "password": REDACTED}
    assert is_secret_value(f"x{value}y") and not is_secret_value("harmless")


def test_child_env_is_minimal() -> None:
    """Only PATH/LANG/LC_*/HOME/TZ pass by default; named variables pass; secret-valued base vars do not."""
    register_secret("lang-secret-value-123")
    environ = {"PATH": "/bin", "LC_ALL": "C", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "x" * 20, "HF_TOKEN": "hf",
               "LANG": "lang-secret-value-123"}
    env = child_env(pass_env=["HF_TOKEN", "UNSET"], env={"A": "1"}, environ=environ)
    assert env == {"PATH": "/bin", "LC_ALL": "C", "HOME": "/root", "HF_TOKEN": "hf", "A": "1"}


async def test_server_log_lines_lose_registered_secrets() -> None:
    """A spawned server printing its API key (vLLM logs its args) leaves only *** in the runtime's log buffer."""
    key = "sk-server-" + "9f8e7d6c5b4a"
    register_secret(key)
    rt = ProcessRuntime(ProcessRuntimeSettings(command=[sys.executable, "-c", f"print('args: api_key={key}')"]))
    try:
        await rt.start()
        for t in list(rt._tasks):
            await t
        lines = [ln.text for ln in await rt.read_logs()]
    finally:
        await rt.close()
    assert lines == [f"args: api_key={REDACTED}"]


def test_cli_prints_hostile_target_text_escaped(tmp_path: Path) -> None:
    """`incidents` and `explain` show a summary with escape sequences as visible escapes, never raw ESC."""
    state = tmp_path / "state"
    state.mkdir()
    st = Store(state / "state.db")
    try:
        f = Finding(target="vllm", kind="service_down", severity=Severity.P0, summary=HOSTILE, source="test")
        IncidentManager(st).apply(f, 1_800_000_000.0)
    finally:
        st.close()
    cfg = tmp_path / "watchdog.yaml"
    cfg.write_text(f"state_dir: {state}\nhttp: {{enabled: false}}\ntargets:\n  - name: vllm\n"
                   "    base_url: http://127.0.0.1:9\n    model: m\n")
    for args in (["incidents"], ["explain", "1"]):
        out = subprocess.run([sys.executable, "-m", "watchdog", *args, "-c", str(cfg)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\u202e" not in out.stdout
        assert "\\x1b[2J" in out.stdout
    out = subprocess.run([sys.executable, "-m", "watchdog", "incidents", "--json", "-c", str(cfg)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)[0]["summary"] == HOSTILE
    assert not any(c in out.stdout for c in "\x1b\x07\x9b\u202e")
