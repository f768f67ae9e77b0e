"""Fixtures for the web edge tests: the whole daemon (tests/integration's harness: process runtime spawning
the emulator) with a bearer token configured, a headless Debian chromium driven by Selenium, and a real
Alertmanager. Every process started here is stopped in teardown."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration.harness import Harness, HookReceiver, wait_for

WRITE_EVENTS = {"silenced", "acknowledged", "manual_step", "outbox_retry", "outbox_drop", "ingested"}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,900"]


def missing(what: str) -> None:
    """Skip, or fail under CI=true (CI installs chromium, chromium-driver and prometheus-alertmanager)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)


class WebHarness(Harness):
    """The integration harness plus `auth.token_file` (unless `auth=False`) and helpers to call the API."""

    def __init__(self, tmp: Path, receiver: HookReceiver, *, auth: bool = True) -> None:
        super().__init__(tmp, receiver)
        self.token = "web-token-" + os.urandom(12).hex()
        self.token_file = tmp / "api.token"
        self.token_file.write_text(self.token + "\n")
        os.chmod(self.token_file, 0o600)
        self.auth = auth
        self.extra: dict[str, Any] = {}

    def config(self, **kw: Any) -> dict[str, Any]:
        doc = super().config(**kw)
        doc["http"]["alertmanager"] = {"kinds": {"VllmLatencyHigh": "latency_sla", "VllmDown": "service_down"}}
        if self.auth:
            doc["auth"] = {"token_file": str(self.token_file), "token_name": "oncall-test"}
        for key, value in self.extra.items():
            doc.setdefault(key, {}).update(value) if isinstance(value, dict) else doc.__setitem__(key, value)
        return doc

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def post(self, path: str, body: Any = None, *, token: str | None = "", raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        """POST JSON (or `raw` bytes); `token=""` uses the configured token, None sends none."""
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token or self.token}"
        content = raw if raw is not None else httpx.Request("POST", "http://x", json=body).content
        return await self.http.post(self.base + path, content=content, headers=hdrs)

    def snapshot(self, *, full: bool = True) -> dict[str, Any]:
        """What a refused write must leave unchanged: silences, acks and the history entries writes make;
        with `full`, also every incident, history length and outbox row (for a settled daemon)."""
        st = self.daemon.store
        incidents = st.incidents(limit=1000)
        doc: dict[str, Any] = {
            "silences": [(s.id, s.target, s.kind) for s in st.silences()],
            "acked": {i.id: st.get(f"acked:{i.id}") for i in incidents},
            "writes": {i.id: [(e["event"], e["at"]) for e in st.events(i.id) if e["event"] in WRITE_EVENTS]
                       for i in incidents},
        }
        if full:
            doc["incidents"] = [(i.id, i.state.value, i.occurrences, i.severity.value) for i in incidents]
            doc["events"] = {i.id: len(st.events(i.id)) for i in incidents}
            doc["outbox"] = [(r.id, r.state) for r in st.outbox_rows(limit=1000)]
        return doc

    async def settle(self) -> dict[str, Any]:
        """The full snapshot once it holds still for 1.2 s (remediation ticks every second)."""
        last: list[dict[str, Any]] = [{}]

        async def still() -> bool:
            now = self.snapshot()
            same, last[0] = now == last[0], now
            if not same:
                await asyncio.sleep(1.2)
            return same

        await wait_for(still, timeout=20, what="the daemon's state holds still", step=0.0)
        return last[0]


@pytest.fixture
async def receiver() -> AsyncIterator[HookReceiver]:
    r = HookReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.close()


async def _closed(h: Harness) -> None:
    await h.close()
    await wait_for(lambda: not h.leftover_pids(), timeout=10, what="no leftover emulator process")


@pytest.fixture
async def web(tmp_path: Path, receiver: HookReceiver) -> AsyncIterator[WebHarness]:
    h = WebHarness(tmp_path, receiver)
    try:
        yield h
    finally:
        await _closed(h)


@pytest.fixture
async def web_noauth(tmp_path: Path, receiver: HookReceiver) -> AsyncIterator[WebHarness]:
    h = WebHarness(tmp_path, receiver, auth=False)
    try:
        yield h
    finally:
        await _closed(h)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian chromium through Debian's chromedriver (Selenium); a fresh profile per test."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        missing("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="wd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def alertmanager_config(webhook_url: str, token_file: Path) -> str:
    return f"""
route:
  receiver: watchdog
  group_by: [alertname, target]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: watchdog
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token_file}
"""


class Alertmanager:
    """A real Alertmanager process on loopback with a webhook receiver pointing at the watchdog."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.dir = workdir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, webhook_url: str, token_file: Path) -> None:
        (self.dir / "am.yml").write_text(alertmanager_config(webhook_url, token_file))
        log = (self.dir / "am.log").open("wb")
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={self.dir / 'am.yml'}", f"--storage.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {self.log()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/-/ready", timeout=1.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("alertmanager did not become ready in 20 s")
            time.sleep(0.1)

    def log(self) -> str:
        p = self.dir / "am.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    if not os.access(ALERTMANAGER, os.X_OK):
        missing(f"{ALERTMANAGER} not installed (apt-get install prometheus-alertmanager)")
    from integration.harness import free_port

    d = tmp_path / "am"
    d.mkdir()
    am = Alertmanager(d, free_port())
    try:
        yield am
    finally:
        am.stop()
