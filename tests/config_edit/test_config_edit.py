"""Setting edits in env files and vLLM YAML files (watchdog.remediation.config_edit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdog.remediation.config_edit import (
    Change,
    ConfigEditError,
    ConfigFile,
    Edit,
    RefusalCode,
    apply,
    env_for,
    plan,
    read_setting,
    setting_spec,
    validate_edit,
)

from .conftest import GOLDEN, files_in

OOM_STEP = [
    Edit("gpu_memory_utilization", "step", -0.05, floor=0.7),
    Edit("max_num_seqs", "scale", 0.5, floor=32),
]


def _env(tmp_path: Path, text: str) -> ConfigFile:
    p = tmp_path / ".env"
    p.write_text(text)
    return ConfigFile(p, "env")


def _yaml(tmp_path: Path, text: str) -> ConfigFile:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return ConfigFile(p, "yaml")


def _one(f: ConfigFile, *edits: Edit) -> tuple[str | None, str | None, str | None]:
    p = plan(f, list(edits))
    return (p.items[0].before, p.items[0].after, p.refusal)


# ------------------------------------------------------------------------------------------- golden files


def test_env_golden_edit_keeps_every_other_byte(golden_copy, tmp_path: Path, clock) -> None:
    """An env edit changes only the edited values (last duplicate, export, quotes, spaces, 32k) byte-exactly."""
    path = golden_copy("vllm.env")
    f = ConfigFile(path, "env")
    p = plan(f, [*OOM_STEP, Edit("max_model_len", "scale", 0.5)])
    assert p.refusal is None, p.refusal
    applied = apply(p, backup_dir=tmp_path / "bk", clock=clock)
    assert path.read_bytes() == (GOLDEN / "vllm.env.expected").read_bytes()
    assert applied.backup_path is not None
    assert applied.backup_path.read_bytes() == (GOLDEN / "vllm.env").read_bytes()
    assert [(c.key, c.before, c.after) for c in applied.changes] == [
        ("GPU_MEMORY_UTILIZATION", "0.9", "0.85"),
        ("MAX_NUM_SEQS", "192", "96"),
        ("MAX_MODEL_LEN", "32k", "16000"),
    ]
    assert env_for(applied.changes) == {"GPU_MEMORY_UTILIZATION": "0.85", "MAX_NUM_SEQS": "96",
                                        "MAX_MODEL_LEN": "16000"}


def test_yaml_golden_edit_keeps_comments_order_and_bytes(golden_copy, tmp_path: Path, clock) -> None:
    """A YAML edit keeps comments, order, quoting, flow style and every other byte; new keys go last."""
    path = golden_copy("vllm.yaml")
    f = ConfigFile(path, "yaml")
    p = plan(f, [*OOM_STEP, Edit("max_num_batched_tokens", "scale", 0.5, floor=2048),
                 Edit("enforce_eager", "set", True)])
    assert p.refusal is None, p.refusal
    applied = apply(p, backup_dir=tmp_path / "bk", clock=clock)
    assert path.read_bytes() == (GOLDEN / "vllm.yaml.expected").read_bytes()
    assert [(c.key, c.before, c.after) for c in applied.changes] == [
        ("gpu-memory-utilization", "0.9", "0.85"),
        ("max_num_seqs", "256", "128"),  # the underscore spelling is found and kept
        ("max-num-batched-tokens", "8192", "4096"),
        ("enforce-eager", None, "true"),
    ]
    assert env_for(applied.changes) == {}  # the server reads YAML values from the file


def test_plan_writes_nothing_and_repr_hides_content(tmp_path: Path) -> None:
    """Planning never writes, and a plan's repr does not show the file's bytes (they may hold secrets)."""
    f = _env(tmp_path, "HF_TOKEN=hf_abcdef\nGPU_MEMORY_UTILIZATION=0.9\n")
    p = plan(f, OOM_STEP[:1])
    assert f.path.read_text() == "HF_TOKEN=hf_abcdef\nGPU_MEMORY_UTILIZATION=0.9\n"
    assert "hf_abcdef" not in repr(p)
    assert p.ok and p.changes == (Change("GPU_MEMORY_UTILIZATION", "0.9", "0.85", "gpu_memory_utilization",
                                         "GPU_MEMORY_UTILIZATION", "env"),)


def test_env_crlf_and_missing_final_newline(tmp_path: Path, clock) -> None:
    """CRLF line ends survive an edit, and an added key uses them after a newline is supplied."""
    f = _env(tmp_path, "")
    f.path.write_bytes(b"A=1\r\nMAX_NUM_SEQS=256\r\nB=2")
    apply(plan(f, [Edit("max_num_seqs", "set", 128), Edit("enforce_eager", "set", "false")]),
          backup_dir=None, clock=clock)
    assert f.path.read_bytes() == b"A=1\r\nMAX_NUM_SEQS=128\r\nB=2\r\nENFORCE_EAGER=false\r\n"


def test_yaml_underscore_and_dash_last_one_wins(tmp_path: Path) -> None:
    """When both spellings are present the later one is the effective value and the one edited."""
    f = _yaml(tmp_path, "gpu_memory_utilization: 0.95\ngpu-memory-utilization: 0.8\n")
    assert read_setting(f, "gpu_memory_utilization") == "0.8"
    p = plan(f, [Edit("gpu_memory_utilization", "set", 0.75)])
    assert p.new_data == b"gpu_memory_utilization: 0.95\ngpu-memory-utilization: 0.75\n"


def test_yaml_anchor_falls_back_to_round_trip(tmp_path: Path, clock) -> None:
    """An anchored value is edited through ruamel's round-trip, keeping comments and the alias's value."""
    f = _yaml(tmp_path, "# c\nmax-num-seqs: &n 256  # seqs\nother: *n\n")
    apply(plan(f, [Edit("max_num_seqs", "set", 64)]), backup_dir=None, clock=clock)
    text = f.path.read_text()
    assert "# c\n" in text and "# seqs" in text
    assert read_setting(f, "max_num_seqs") == "64"
    assert read_setting(f, "other", key="other") == "256"


def test_yaml_empty_file_gets_the_key(tmp_path: Path, clock) -> None:
    """`set` on an empty YAML file writes a one-key mapping."""
    f = _yaml(tmp_path, "")
    apply(plan(f, [Edit("gpu_memory_utilization", "set", "0.8")]), backup_dir=None, clock=clock)
    assert f.path.read_text() == "gpu-memory-utilization: 0.8\n"


def test_explicit_key_and_unknown_setting(tmp_path: Path) -> None:
    """An explicit key is used literally; an unknown setting derives UPPER_SNAKE / dashed keys."""
    f = _env(tmp_path, "VLLM_SWAP=4\nBLOCK_SIZE=16\n")
    p = plan(f, [Edit("swap_space", "step", 2, key="VLLM_SWAP"), Edit("block_size", "scale", 2)])
    assert [(i.key, i.before, i.after) for i in p.items] == [("VLLM_SWAP", "4", "6"), ("BLOCK_SIZE", "16", "32")]
    assert setting_spec("block_size").yaml_key == "block-size"


# ------------------------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("current", "edit", "after"),
    [
        ("0.9", Edit("gpu_memory_utilization", "step", -0.05, floor=0.7), "0.85"),
        ("0.72", Edit("gpu_memory_utilization", "step", -0.05, floor=0.7), "0.7"),  # clamped to the floor
        ("0.8", Edit("gpu_memory_utilization", "step", 0.1, ceiling=0.85), "0.85"),  # clamped to the ceiling
        ("0.9", Edit("gpu_memory_utilization", "scale", 0.5), "0.45"),
        ("0.9", Edit("gpu_memory_utilization", "set", 1), "1.0"),  # float settings stay floats
        ("256", Edit("max_num_seqs", "scale", 0.5, floor=32), "128"),
        ("255", Edit("max_num_seqs", "scale", 0.5), "127"),  # lowering rounds down
        ("5", Edit("max_num_seqs", "scale", 1.1), "6"),  # raising rounds up
        ("40", Edit("max_num_seqs", "scale", 0.5, floor=32.5), "33"),  # an integer floor rounds up
        ("256", Edit("max_num_seqs", "step", -0.5), "255"),
        ("1K", Edit("max_model_len", "scale", 2), "2048"),
        ("4", Edit("custom", "step", 1.5, key="CUSTOM"), "6"),  # unknown key written as int stays int
        ("4.0", Edit("custom", "step", 1.5, key="CUSTOM"), "5.5"),
    ],
)
def test_step_scale_set_results(tmp_path: Path, current: str, edit: Edit, after: str) -> None:
    """step/scale/set compute exact decimal results, clamp to floor/ceiling and round integers."""
    key = setting_spec(edit.setting, edit.key).env_key
    f = _env(tmp_path, f"{key}={current}\n")
    assert _one(f, edit) == (current, after, None)


def test_missing_key_uses_default(tmp_path: Path) -> None:
    """A step on an absent key starts from the edit's default and appends the key."""
    f = _env(tmp_path, "A=1\n")
    p = plan(f, [Edit("gpu_memory_utilization", "step", -0.05, floor=0.7, default=0.9)])
    assert (p.items[0].before, p.items[0].after) == (None, "0.85")
    assert p.new_data == b"A=1\nGPU_MEMORY_UTILIZATION=0.85\n"


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("text", "edit", "reason"),
    [
        ("GPU_MEMORY_UTILIZATION=0.70\n", Edit("gpu_memory_utilization", "step", -0.05, floor=0.7),
         "AT_FLOOR: gpu_memory_utilization (GPU_MEMORY_UTILIZATION) in {f}: is 0.70, already at the floor 0.7"),
        ("GPU_MEMORY_UTILIZATION=0.6\n", Edit("gpu_memory_utilization", "scale", 0.5, floor=0.7),
         "AT_FLOOR: gpu_memory_utilization (GPU_MEMORY_UTILIZATION) in {f}: is 0.6, already at the floor 0.7"),
        ("MAX_NUM_SEQS=512\n", Edit("max_num_seqs", "scale", 2, ceiling=512),
         "AT_CEILING: max_num_seqs (MAX_NUM_SEQS) in {f}: is 512, already at the ceiling 512"),
        ("A=1\n", Edit("max_num_seqs", "scale", 0.5, floor=32),
         "MISSING_KEY: max_num_seqs (MAX_NUM_SEQS) in {f}: is not in the file and the edit gives no default"),
        ("MAX_NUM_SEQS=lots\n", Edit("max_num_seqs", "scale", 0.5),
         "NOT_A_NUMBER: max_num_seqs (MAX_NUM_SEQS) in {f}: current value 'lots' is not a number"),
        ("MAX_NUM_SEQS=\n", Edit("max_num_seqs", "scale", 0.5),
         "NOT_A_NUMBER: max_num_seqs (MAX_NUM_SEQS) in {f}: current value '' is not a number"),
        ("GPU_MEMORY_UTILIZATION=nan\n", Edit("gpu_memory_utilization", "step", -0.1),
         "NOT_A_NUMBER: gpu_memory_utilization (GPU_MEMORY_UTILIZATION) in {f}: current value 'nan' is not a "
         "number"),
        ("GPU_MEMORY_UTILIZATION=0.9\n", Edit("gpu_memory_utilization", "step", -0.05, floor=0.8, ceiling=0.7),
         "BAD_BOUNDS: gpu_memory_utilization (GPU_MEMORY_UTILIZATION) in {f}: floor 0.8 is above ceiling 0.7"),
        ("GPU_MEMORY_UTILIZATION=0.9\n", Edit("gpu_memory_utilization", "set", 0.5, floor=0.7),
         "OUT_OF_BOUNDS: gpu_memory_utilization (GPU_MEMORY_UTILIZATION) in {f}: value 0.5 is outside floor 0.7"),
        ("GPU_MEMORY_UTILIZATION=0.05\n", Edit("gpu_memory_utilization", "step", -0.05),
         "OUT_OF_RANGE: gpu_memory_utilization (GPU_MEMORY_UTILIZATION) in {f}: result 0.00 is out of range "
         "(vLLM needs > 0; set a floor)"),
        ("GPU_MEMORY_UTILIZATION=0.9\n", Edit("gpu_memory_utilization", "set", "0.90"),
         "NO_CHANGE: gpu_memory_utilization (GPU_MEMORY_UTILIZATION) in {f}: is already 0.9"),
        ("MAX_NUM_SEQS=8\n", Edit("max_num_seqs", "step", "fast"),
         "BAD_EDIT: max_num_seqs (MAX_NUM_SEQS) in {f}: step needs a number (got 'fast')"),
        ("MAX_NUM_SEQS=8\n", Edit("max_num_seqs", "set", 7.5),
         "BAD_EDIT: max_num_seqs (MAX_NUM_SEQS) in {f}: is an integer setting; 7.5 is not an integer"),
        ("HF_TOKEN=x\n", Edit("hf_token", "set", "y"),
         "BAD_EDIT: hf_token (HF_TOKEN) in {f}: looks like a secret; the watchdog does not edit secrets"),
    ],
)
def test_refusals_have_exact_reasons_and_write_nothing(tmp_path: Path, clock, text: str, edit: Edit,
                                                       reason: str) -> None:
    """Each refusal carries its code and an exact reason naming setting, key and file; apply writes nothing."""
    f = _env(tmp_path, text)
    p = plan(f, [edit])
    assert p.refusal == reason.format(f=f.path)
    assert p.code == RefusalCode(reason.split(":")[0])
    with pytest.raises(ConfigEditError, match="not writing"):
        apply(p, backup_dir=tmp_path / "bk", clock=clock)
    assert f.path.read_text() == text
    assert files_in(tmp_path / "bk") == []


def test_one_refused_edit_refuses_the_whole_plan(tmp_path: Path) -> None:
    """All or nothing: if max_num_seqs is at its floor, the gpu edit is not written either."""
    f = _env(tmp_path, "GPU_MEMORY_UTILIZATION=0.9\nMAX_NUM_SEQS=32\n")
    p = plan(f, OOM_STEP)
    assert p.code == RefusalCode.AT_FLOOR and not p.ok and p.changes == (Change(
        "GPU_MEMORY_UTILIZATION", "0.9", "0.85", "gpu_memory_utilization", "GPU_MEMORY_UTILIZATION", "env"),)
    assert p.new_data == f.path.read_bytes()


def test_validate_edit_for_policy_check() -> None:
    """validate_edit reports edits that can never apply, without any file."""
    assert validate_edit(Edit("x", "step", 1, floor=2, ceiling=1)) == "BAD_BOUNDS: x: floor 2 is above ceiling 1"
    assert validate_edit(Edit("enforce_eager", "step", 1)) == \
        "BAD_EDIT: enforce_eager: boolean setting: only op 'set' applies"
    halve = Edit("x", "halve", 1)  # type: ignore[arg-type]
    assert validate_edit(halve) == "BAD_EDIT: x: op must be set, step or scale (got 'halve')"
    assert validate_edit(Edit("max_num_seqs", "scale", 0)) == "BAD_EDIT: max_num_seqs: scale factor must be > 0 (got 0)"
    assert validate_edit(OOM_STEP[0]) is None


# ------------------------------------------------------------------------------------------- bad input


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    """Malformed YAML raises a ConfigEditError with file:line and writes nothing."""
    f = _yaml(tmp_path, "model: m\ngpu-memory-utilization: [0.9\n")
    with pytest.raises(ConfigEditError, match=r"config\.yaml:3: malformed YAML: expected ',' or ']'") as ei:
        plan(f, OOM_STEP[:1])
    assert ei.value.code == "MALFORMED"
    assert f.path.read_text() == "model: m\ngpu-memory-utilization: [0.9\n"


def test_yaml_duplicate_and_non_mapping(tmp_path: Path) -> None:
    """Duplicate keys and a non-mapping document are clear errors naming the file."""
    f = _yaml(tmp_path, "a: 1\nb: 2\na: 3\n")
    with pytest.raises(ConfigEditError, match=r"config\.yaml: duplicate key 'a' at lines 1 and 3"):
        plan(f, OOM_STEP[:1])
    f.path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigEditError, match=r"config\.yaml: the YAML config must be a mapping"):
        read_setting(f, "max_num_seqs")


def test_yaml_list_value_is_not_a_number(tmp_path: Path) -> None:
    """A list where a number is expected is refused NOT_A_NUMBER naming the key."""
    f = _yaml(tmp_path, "max-num-seqs: [1, 2]\n")
    assert plan(f, [Edit("max_num_seqs", "step", 1)]).refusal == (
        f"NOT_A_NUMBER: max_num_seqs (max-num-seqs) in {f.path}: is a list or mapping, not a single value")


def test_unreadable_file_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    """A file the watchdog may not read gives an error naming it (EACCES simulated: tests run as root)."""
    import builtins

    f = _env(tmp_path, "A=1\n")
    real_open = builtins.open

    def deny(file, *a, **kw):
        if Path(str(file)) == f.path.resolve():
            raise PermissionError(13, "Permission denied")
        return real_open(file, *a, **kw)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(ConfigEditError, match=r"\.env: permission denied \(the watchdog user must be able") as ei:
        plan(f, OOM_STEP[:1])
    assert ei.value.code == "UNREADABLE"


def test_missing_file_and_directory_are_clear_errors(tmp_path: Path) -> None:
    """A missing file or a directory in place of the file is a ConfigEditError naming the path."""
    with pytest.raises(ConfigEditError, match=r"nope\.env: file not found") as ei:
        plan(ConfigFile(tmp_path / "nope.env", "env"), OOM_STEP)
    assert ei.value.code == "UNREADABLE"
    with pytest.raises(ConfigEditError, match="not a regular file"):
        plan(ConfigFile(tmp_path, "env"), OOM_STEP)


def test_unterminated_quote_names_line_and_key(tmp_path: Path) -> None:
    """An env value with an unterminated quote is an error naming file, line and key."""
    f = _env(tmp_path, 'A=1\nMAX_NUM_SEQS="256\n')
    with pytest.raises(ConfigEditError, match=r'\.env:2: MAX_NUM_SEQS: unterminated " quote'):
        plan(f, OOM_STEP)


def test_apply_refuses_when_file_changed_since_plan(tmp_path: Path, clock) -> None:
    """If an operator edits the file between plan and apply, nothing is written and no backup is made."""
    f = _env(tmp_path, "GPU_MEMORY_UTILIZATION=0.9\n")
    p = plan(f, OOM_STEP[:1])
    f.path.write_text("GPU_MEMORY_UTILIZATION=0.95\n")
    with pytest.raises(ConfigEditError, match="changed since the edit was planned"):
        apply(p, backup_dir=tmp_path / "bk", clock=clock)
    assert f.path.read_text() == "GPU_MEMORY_UTILIZATION=0.95\n"
    assert files_in(tmp_path / "bk") == []


def test_invalid_utf8_bytes_elsewhere_survive_env_edit(tmp_path: Path, clock) -> None:
    """Bytes that are not UTF-8 on other lines are written back unchanged."""
    f = _env(tmp_path, "")
    f.path.write_bytes(b"NOTE=caf\xe9\nMAX_NUM_SEQS=64\n")
    apply(plan(f, [Edit("max_num_seqs", "step", -32)]), backup_dir=None, clock=clock)
    assert f.path.read_bytes() == b"NOTE=caf\xe9\nMAX_NUM_SEQS=32\n"
