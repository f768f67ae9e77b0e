"""Adapters: the only code that touches the world (docker, NVML, HTTP, files, systemd notify).

Each adapter wraps one blocking or OS-level interface behind a narrow, typed surface so that the
stages above it can be tested with fakes. Adapters must never make decisions (no thresholds, no
policies): they observe or act exactly as asked and report what happened.
"""
