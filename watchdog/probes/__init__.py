"""Probes: observe one thing and return a ProbeResult. Stage: probe.

A probe never judges (detectors do) and never raises for a down target: that is a FAIL result.
"""
