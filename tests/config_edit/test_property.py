"""Property: repeated `step`/`scale` edits never go under the floor (hypothesis)."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.clock import FakeClock
from watchdog.remediation.config_edit import ConfigFile, Edit, RefusalCode, apply, plan, read_setting


@settings(max_examples=40, deadline=None)
@given(
    start=st.decimals(min_value=Decimal("0.50"), max_value=Decimal("1"), places=2),
    floor=st.decimals(min_value=Decimal("0.05"), max_value=Decimal("0.95"), places=2),
    delta=st.decimals(min_value=Decimal("-0.3"), max_value=Decimal("-0.01"), places=3),
)
def test_repeated_step_never_goes_under_the_floor(start: Decimal, floor: Decimal, delta: Decimal) -> None:
    """Stepping gpu_memory_utilization down until refused stays ≥ floor and ends with AT_FLOOR."""
    with tempfile.TemporaryDirectory() as d:
        f = ConfigFile(Path(d) / ".env", "env")
        f.path.write_text(f"# c\nGPU_MEMORY_UTILIZATION={start}\n")
        edit = Edit("gpu_memory_utilization", "step", float(delta), floor=float(floor))
        clock = FakeClock()
        for _ in range(200):
            p = plan(f, [edit])
            if not p.ok:
                assert p.code == RefusalCode.AT_FLOOR
                break
            apply(p, backup_dir=None, clock=clock)
            value = Decimal(str(read_setting(f, "gpu_memory_utilization")))
            assert value >= floor
        else:
            raise AssertionError("never reached the floor")
        final = Decimal(str(read_setting(f, "gpu_memory_utilization")))
        assert final == (start if start <= floor else floor)


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(min_value=1, max_value=4096),
    floor=st.integers(min_value=1, max_value=512),
    factor=st.sampled_from([0.5, 0.75, 0.9]),
)
def test_repeated_integer_scale_never_goes_under_the_floor(start: int, floor: int, factor: float) -> None:
    """Halving max_num_seqs repeatedly stays an integer ≥ floor and makes progress each time."""
    with tempfile.TemporaryDirectory() as d:
        f = ConfigFile(Path(d) / "c.yaml", "yaml")
        f.path.write_text(f"max-num-seqs: {start}  # seqs\n")
        previous = start
        for _ in range(200):
            p = plan(f, [Edit("max_num_seqs", "scale", factor, floor=floor)])
            if not p.ok:
                assert p.code == RefusalCode.AT_FLOOR
                break
            apply(p, backup_dir=None, clock=FakeClock())
            now = int(str(read_setting(f, "max_num_seqs")))
            assert floor <= now < previous
            previous = now
        else:
            raise AssertionError("never reached the floor")
        assert previous == (start if start <= floor else floor)
