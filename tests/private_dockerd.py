"""A private dockerd for tests that stop and start the Docker engine under a running watchdog: its own
socket, data-root and exec-root in a short temp dir, so stopping it never disturbs the shared engine or
other tests. Shared by tests/runtimes and tests/docker (fixtures in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path


class PrivateDockerd:
    """A dockerd of our own (socket, data-root, exec-root in a short temp dir), so that stopping it never
    disturbs the shared engine. """

    def __init__(self, *, live_restore: bool = False) -> None:
        self.live_restore = live_restore  # containers keep running while dockerd is down
        self.dir = Path(tempfile.mkdtemp(prefix="wd-dd-", dir="/tmp"))  # unix socket paths ≤ 107 bytes
        self.url = f"unix://{self.dir}/d.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import docker

        log = open(self.dir / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--host", self.url, "--data-root", str(self.dir / "root"),
             "--exec-root", str(self.dir / "exec"), "--pidfile", str(self.dir / "d.pid"),
             *(["--live-restore"] if self.live_restore else [])],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                c = docker.DockerClient(base_url=self.url, version="auto", timeout=5)
                c.ping()
                c.close()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"private dockerd did not come up: {(self.dir / 'dockerd.log').read_text()[-800:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        # with --live-restore, containers outlive their dockerd: remove them while it still answers, then
        # end any process of ours that is still tied to this engine's directory (container shims)
        if self.proc is not None and self.proc.poll() is None:
            import docker

            with contextlib.suppress(Exception):
                c = docker.DockerClient(base_url=self.url, version="auto", timeout=30)
                for ctr in c.containers.list(all=True):
                    with contextlib.suppress(Exception):
                        ctr.remove(force=True)
                c.close()
        self.stop()
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if str(self.dir) in (pid_dir / "cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(pid_dir.name), signal.SIGKILL)
        # dockerd leaves mounts behind (its data-root bind-mounted on itself, the netns nsfs): deepest first
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh]
        mine = sorted({m for m in points if m == str(self.dir) or m.startswith(f"{self.dir}/")}, key=len,
                      reverse=True)
        for m in mine:
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def import_base(self) -> None:
        """The empty base image, made from nothing (no registry can be reached)."""
        import docker

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in ("proc", "sys", "dev", "etc", "tmp"):
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
        c = docker.DockerClient(base_url=self.url, version="auto", timeout=30)
        try:
            c.api.import_image_from_data(buf.getvalue(), repository="hostbase", tag="latest")
        finally:
            c.close()
