"""Detectors: judge probe results, keep windows and counters, emit Finding edges. Stage: detect.

A detector never does I/O and never acts; it only publishes edges (open, change, resolve).
"""
