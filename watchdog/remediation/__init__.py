"""Remediation: the act stage — policies, guards, actions, config edits and config snapshots.

Everything here changes the world (restarts, config files, docker disk) only through adapters and
only after a policy verdict with a reason; it must never act without recording what it did, and
never lose an operator's data (every replaced config file is backed up first).
"""
