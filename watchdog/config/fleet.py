"""The `fleet:` config section: which etcd, which group, how much may be disrupted at once. Stage: config
edge (model only; `watchdog.fleet.settings` re-exports it for the fleet stage).

Strict pydantic models (unknown keys are errors). They must never open a connection or read a file:
TLS paths are only validated as paths here and resolved against the config file by the loader.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_PERCENT = re.compile(r"^\s*(\d{1,3}(?:\.\d+)?)\s*%\s*$")
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class FailureMode(StrEnum):
    """What a disruptive step does when etcd has no quorum for us."""

    FAIL_CLOSED = "fail_closed"  # no slot, no disruptive step (waits with FLEET_UNREACHABLE)
    FAIL_OPEN = "fail_open"  # act locally and page P1 "fleet coordination lost"


class EtcdSettings(BaseModel):
    """Where etcd is and how to reach it. TLS is optional; `cert_file` and `key_file` come together."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    endpoints: Annotated[list[str], Field(min_length=1, description="etcd client URLs (http:// or https://"
                                          "host:2379); each is tried in turn")]
    ca_file: Path | None = Field(None, description="CA bundle that signs the etcd servers' certificates (https)")
    cert_file: Path | None = Field(None, description="Client certificate presented to etcd (with key_file)")
    key_file: Path | None = Field(None, description="Key of the client certificate (readable by the watchdog only)")
    timeout_s: Annotated[float, Field(gt=0, le=30, description="Per endpoint and per call; an etcd call never "
                                      "waits longer than about twice this")] = 2.0

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for u in v:
            if not re.match(r"^https?://[^/\s]+(:\d+)?/?$", u):
                raise ValueError(f"endpoint {u!r} must look like http://host:2379 or https://host:2379")
        return [u.rstrip("/") for u in v]

    @model_validator(mode="after")
    def _pair(self) -> EtcdSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together (client TLS)")
        return self


class FleetSettings(BaseModel):
    """One fleet group: replicas of the same model on several hosts, coordinated through etcd."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    etcd: EtcdSettings = Field(description="The etcd cluster that holds the group's slots, members and breaker")
    group: str = Field(description="The replicas that serve the same model (1-63 letters, digits, . _ -)")
    host: str | None = Field(None, description="This watchdog's name in the group (default: the hostname)")
    max_disrupted: int | str = Field(1, description="Replicas that may be restarted/re-created at once: an "
                                     "integer, or a percentage of the group such as '25%' (at least 1)")
    breaker_percent: Annotated[float, Field(gt=0, le=100, description="More than this share of the group "
                                            "unhealthy stops disruptive steps fleet-wide and pages one P0 "
                                            "(100 = off)")] = 50.0
    breaker_min_targets: Annotated[int, Field(ge=1, description="A group with fewer registered targets is "
                                              "never judged by the breaker")] = 2
    lease_ttl_s: Annotated[int, Field(ge=2, le=300, description="A dead watchdog's slot and membership "
                                      "vanish within this")] = 10
    mode: FailureMode | None = Field(None, description="etcd unreachable: fail_closed (wait) or fail_open (act "
                                     "and page P1); default fail_closed, fail_open for a group of one")
    retry_s: Annotated[float, Field(gt=0, le=60, description="How often a waiting disruptive step asks for a "
                                    "slot again")] = 1.0
    prefix: str = Field("/vllm-watchdog", description="etcd key prefix of all groups")

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        if not _GROUP.match(v):
            raise ValueError("group must be 1-63 characters of letters, digits, '.', '_' or '-'")
        return v

    @field_validator("max_disrupted")
    @classmethod
    def _max(cls, v: int | str) -> int | str:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("max_disrupted must be >= 1 (or a percentage such as '25%')")
            return v
        m = _PERCENT.match(v)
        if m is None or not 0 < float(m.group(1)) <= 100:
            raise ValueError(f"max_disrupted {v!r} must be an integer >= 1 or a percentage such as '25%'")
        return v.strip()

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/"):
            raise ValueError("prefix must start with '/' and not end with '/'")
        return v

    def slots_for(self, group_size: int) -> int:
        """How many replicas may be disrupted at once in a group of `group_size` targets: the integer, or
        the percentage rounded down, never below 1 (so a group can always heal one replica at a time)."""
        if isinstance(self.max_disrupted, int):
            return self.max_disrupted
        m = _PERCENT.match(self.max_disrupted)
        assert m is not None  # validated above
        return max(1, math.floor(float(m.group(1)) * max(group_size, 0) / 100 + 1e-9))

    def effective_mode(self, last_group_size: int) -> FailureMode:
        """The configured mode, or the default: fail_open only for a group last seen with exactly one
        target (nothing to coordinate with); fail_closed for larger groups and for a group never seen."""
        if self.mode is not None:
            return self.mode
        return FailureMode.FAIL_OPEN if last_group_size == 1 else FailureMode.FAIL_CLOSED


__all__ = ["EtcdSettings", "FailureMode", "FleetSettings"]
