"""The base of every config model. Stage: config edge.

`Strict` forbids unknown keys (a typo is an error with a location, not a silently ignored setting) and
hides input values from validation errors (a secret pasted inline never reaches a message). This
module must never import anything from the watchdog beyond the standard library and pydantic.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A config section: unknown keys are errors and input values never appear in error texts."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, populate_by_name=True)


__all__ = ["Strict"]
