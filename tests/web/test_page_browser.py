"""The status page in a real browser (Debian's headless chromium through chromedriver and Selenium) against
the whole daemon and the emulator: the target and its probe states appear, a fault's incident and its
remediation timeline update live without a reload, a silence made from the page shows up in
`vllm-watchdog silence list`, markup in a target-supplied string stays text, and a write without the
token is refused (401) and changes nothing. The test saves the screenshots shown in the README."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from integration.harness import ROOT, wait_for

from watchdog import cli

from .conftest import WebHarness
from .test_writes import am_payload

IMG = ROOT / "docs" / "img"
EVIL = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Selenium blocks: run it in a thread so the in-process daemon keeps answering."""
    return await asyncio.to_thread(fn, *args)


async def js(driver: Any, script: str) -> Any:
    return await call(driver.execute_script, script)


def timeline_len(iid: int) -> str:
    return f"return document.querySelectorAll('.incident[data-id=\"{iid}\"] ol.timeline li').length"


async def shot(driver: Any, name: str) -> Path:
    IMG.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # the layout settles at the new size, then the window fits it
        height = await js(driver, "return document.documentElement.scrollHeight + window.outerHeight"
                                  " - window.innerHeight")
        await call(driver.set_window_size, 1200, max(900, min(int(height) + 20, 2400)))
    path = IMG / name
    assert await call(driver.save_screenshot, str(path))
    return path


def silence_list(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    rc = cli.main(["silence", "--config", str(config), "list"])
    assert rc == 0
    return capsys.readouterr().out


async def test_page_live_in_a_real_browser(web: WebHarness, browser: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Healthy page → a sticky crash opens an incident whose timeline grows on the open page (no reload);
    a silence made from the page is listed by the CLI; a tokenless write is 401 and changes nothing."""
    h = web
    await h.start()
    await wait_for(lambda: all(t.state.value == "passing" for t in h.daemon.targets["vllm"].trackers.values()),
                   timeout=30, what="probes passing")
    await call(browser.get, h.base + "/")
    readiness = ("return (document.querySelector('.target[data-name=\"vllm\"] [data-probe=\"readiness\"] .pill')"
                 " || {}).textContent")
    await wait_for(lambda: _eq(js(browser, readiness), "passing"), timeout=15, what="target on the page")
    await wait_for(lambda: _eq(js(browser, "return document.getElementById('live').textContent"), "live"),
                   timeout=10, what="event stream connected")
    await js(browser, "window.__marker = 42")
    await shot(browser, "status-healthy.png")

    base = h.max_incident_id()
    h.set_fault("exit", code=1, sticky=True)  # the server exits at once, and at every restart
    incs = await wait_for(lambda: h.incidents(since_id=base), timeout=20, what="an incident")
    iid = incs[0].id
    first = await wait_for(lambda: js(browser, timeline_len(iid)), timeout=5, what="the incident on the page")
    await wait_for(lambda: _gt(js(browser, timeline_len(iid)), first), timeout=30,
                   what="the incident's timeline growing on the open page")
    await wait_for(lambda: _gt(js(browser, timeline_len(iid).replace(" li'", " li.attempt'")), 0), timeout=30,
                   what="a remediation attempt in the page's timeline")
    assert await js(browser, "return window.__marker") == 42, "updated without a reload"
    summary = await js(browser, f"return document.querySelector('.incident[data-id=\"{iid}\"] .summary').textContent")
    assert summary == h.daemon.store.incident(iid).summary
    await shot(browser, "status-incident.png")

    # markup in a target-supplied string (an Alertmanager annotation) stays text
    await h.post("/api/v1/alerts/alertmanager", am_payload(summary=EVIL))
    await wait_for(lambda: _contains(js(browser, "return document.getElementById('incidents').textContent"), EVIL),
                   timeout=5, what="the alert's summary on the page, as text")
    assert await js(browser, "return window.__pwned === undefined && document.images.length === 0")

    # a silence made from the page
    await js(browser, f"document.getElementById('token').value = {h.token!r};"
                      "document.getElementById('silence-target').value = 'vllm';"
                      "document.getElementById('silence-duration').value = '2h';"
                      "document.getElementById('silence-reason').value = 'page test: disk swap';"
                      "document.getElementById('silence-submit').click()")
    await wait_for(lambda: _contains(js(browser, "return document.getElementById('msg').textContent"), "silence #"),
                   timeout=10, what="silence acknowledged on the page")
    out = await call(silence_list, h.config_path, capsys)
    assert "page test: disk swap" in out and "vllm" in out
    await wait_for(lambda: _contains(js(browser, "return document.getElementById('silences').textContent"),
                                     "page test: disk swap"), timeout=5, what="the silence listed on the page")

    # without the token: refused, nothing changed
    before = h.snapshot(full=False)  # the crash loop goes on: compare what a silence write could change
    status = await js(browser, "var x = new XMLHttpRequest(); x.open('POST', '/api/v1/silences', false);"
                               "x.setRequestHeader('Content-Type', 'application/json');"
                               "x.send(JSON.stringify({target: 'vllm', duration: '1h', reason: 'no token'}));"
                               "return x.status")
    assert status == 401
    assert h.snapshot(full=False) == before
    assert await js(browser, "return window.__marker") == 42
    # readable on a phone: no sideways scrolling at 390 px
    await call(browser.set_window_size, 390, 844)
    await wait_for(lambda: _eq(js(browser, "return window.innerWidth <= 400"), True), timeout=5, what="phone size")
    assert await js(browser, "return document.documentElement.scrollWidth <= window.innerWidth")
    h.set_fault("none")
    assert (IMG / "status-incident.png").stat().st_size > 10_000


async def _eq(v: Any, want: Any) -> bool:
    return bool(await v == want)


async def _gt(v: Any, n: int) -> bool:
    return bool((await v or 0) > n)


async def _contains(v: Any, text: str) -> bool:
    return text in str(await v or "")
