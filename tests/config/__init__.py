"""Tests of the configuration schema, the loader, preflight (check --live) and the generated reference."""
