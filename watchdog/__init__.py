"""vllm-watchdog: a self-healing watchdog daemon for vLLM inference servers.

Package root. It must stay import-light: `watchdog.emulator` runs inside bare containers with
only the standard library, so nothing here may import third-party packages.
"""

__version__ = "0.1.0"
