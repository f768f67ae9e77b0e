"""ProcessRuntime specifics with real child processes: SIGKILL escalation, spawn failures, env_file, ring buffer."""

from __future__ import annotations

import sys
from pathlib import Path

from watchdog.adapters.process import ProcessRuntime, ProcessRuntimeSettings, read_env_file
from watchdog.model import RunState

from .conftest import HERE, until, write_ctl

IGNORES_TERM = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
               "time.sleep(60)"


async def test_sigterm_ignored_escalates_to_sigkill() -> None:
    """A child that ignores SIGTERM is SIGKILLed after the timeout and reads as exit 137."""
    rt = ProcessRuntime(ProcessRuntimeSettings(command=[sys.executable, "-c", IGNORES_TERM]))
    try:
        await rt.start()

        async def ready() -> bool:
            return any(item[1].text == "ready" for item in rt._buf)
        await until(ready)
        res = await rt.stop(timeout_s=0.3)
        assert res.ok and "SIGKILL" in res.reason
        st = await rt.state()
        assert st.state is RunState.EXITED and st.exit_code == 137
    finally:
        await rt.close()


async def test_missing_command_fails_cleanly(tmp_path: Path) -> None:
    """A command that does not exist is a FAILED start with a reason, not an exception."""
    rt = ProcessRuntime(ProcessRuntimeSettings(command=[str(tmp_path / "no-such-binary")]))
    res = await rt.start()
    assert not res.ok and "cannot start" in res.reason
    assert (await rt.state()).state is RunState.MISSING
    await rt.close()


async def test_env_file_read_at_every_start(tmp_path: Path) -> None:
    """The env_file is re-read at each (re)start, so an edited value reaches the restarted child."""
    envf = tmp_path / "vllm.env"
    envf.write_text("# comment\nexport MARK='one'\nOTHER=x\n")
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    rt = ProcessRuntime(ProcessRuntimeSettings(command=[sys.executable, "-u", str(HERE / "ctlapp.py"), str(ctl)],
                                               env_file=envf))
    try:
        await rt.start()
        assert (await rt.effective_env())["MARK"] == "one"
        envf.write_text("MARK=two\n")
        await rt.restart(timeout_s=5)
        assert (await rt.effective_env())["MARK"] == "two"
    finally:
        await rt.close()
    assert read_env_file(envf) == {"MARK": "two"}


async def test_ring_buffer_is_bounded(tmp_path: Path) -> None:
    """Output beyond log_buffer_lines is dropped oldest-first; memory stays bounded."""
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    rt = ProcessRuntime(ProcessRuntimeSettings(command=[sys.executable, "-u", str(HERE / "ctlapp.py"), str(ctl)],
                                               log_buffer_lines=10))
    try:
        await rt.start()
        write_ctl(ctl, "print", "100 x")
        await until(lambda: any(item[1].text == "x 99" for item in rt._buf))
        assert len(rt._buf) == 10
        assert [ln.text for ln in await rt.read_logs()] == [f"x {i}" for i in range(90, 100)]
    finally:
        await rt.close()
    assert rt.pid is None  # close stopped the child
