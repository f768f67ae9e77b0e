"""One schema: every section is typed and validated by the loader, with file:line, did-you-mean and no echo."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdog.config import load_text
from watchdog.config.models import WatchdogConfig
from watchdog.config.runtimes import DockerRuntimeSettings, ProcessRuntimeSettings, SystemdRuntimeSettings
from watchdog.detectors.logs import LogCatalog
from watchdog.errors import ConfigError
from watchdog.notify.notifiers import parse_receiver
from watchdog.notify.routing import parse_route
from watchdog.runtimes import build_runtime

BASE = "targets:\n  - name: vllm\n    base_url: http://127.0.0.1:8000\n    model: m\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_text(text, file="w.yaml")
    return [str(p) for p in ei.value.problems]


def load(text: str) -> WatchdogConfig:
    return load_text(text, file="w.yaml")


def test_detector_typo_has_line_and_did_you_mean() -> None:
    """A typo under targets[].detectors is reported by the loader at its line with a suggestion."""
    out = problems(BASE + "    detectors:\n      sla:\n        p95_latency: 5\n")
    assert out[0].startswith("w.yaml:7: targets[0].detectors.sla.p95_latency: unknown key 'p95_latency' "
                             "(did you mean 'p95_latency_s'? known keys: ")


def test_unknown_detector_section_lists_the_known_ones() -> None:
    """An unknown detector section name is an unknown key among sla, stall, breaker, tls."""
    out = problems(BASE + "    detectors:\n      slaa: {}\n")
    assert out == ["w.yaml:6: targets[0].detectors.slaa: unknown key 'slaa' (did you mean 'sla'? known keys: "
                   "breaker, sla, stall, tls)"]


def test_host_check_typo_and_bound_have_lines() -> None:
    """host.gpu and host.disk are typed: a typo and an out-of-range value both name their line."""
    out = problems(BASE + "host:\n  gpu:\n    expected_cnt: 2\n  disk:\n    warn_free_percent: 140\n")
    assert any(o.startswith("w.yaml:7: host.gpu.expected_cnt: unknown key 'expected_cnt' (did you mean "
                            "'expected_count'?") for o in out)
    assert ("w.yaml:9: host.disk.warn_free_percent: Input should be less than or equal to 100 "
            "(use a number <= 100)") in out


def test_receiver_type_typo_is_a_did_you_mean_at_its_line() -> None:
    """A receiver `type` typo is reported by the loader with the closest type and every known one."""
    out = problems(BASE + "notify:\n  receivers:\n    - name: s\n      type: slak\n")
    assert out == ["w.yaml:8: notify.receivers[0].type: unknown type 'slak' (did you mean 'slack'? use one of: "
                   "webhook, slack, pagerduty, alertmanager, email, log)"]


def test_receiver_key_typo_drops_the_union_tag_from_the_path() -> None:
    """A key typo inside a receiver says notify.receivers[0].url_evn, not ...[0].slack.url_evn."""
    out = problems(BASE + "notify:\n  receivers:\n    - name: s\n      type: slack\n      url_evn: X\n")
    assert out[0].startswith("w.yaml:9: notify.receivers[0].url_evn: unknown key 'url_evn' (did you mean "
                             "'url_env'?")


def test_receiver_needs_a_name() -> None:
    """Every configured receiver must have a name (routes refer to it)."""
    out = problems(BASE + "notify:\n  receivers:\n    - type: log\n")
    assert out == ["w.yaml:6: notify.receivers: receivers[0] has no name: give every receiver a unique `name`"]


def test_route_typo_has_a_line() -> None:
    """The routing tree is typed: a typo deep in it names its line and suggests the key."""
    text = BASE + "notify:\n  route:\n    routes:\n      - severty: [P0]\n"
    out = problems(text)
    assert out[0].startswith("w.yaml:8: notify.route.routes[0].severty: unknown key 'severty' (did you mean "
                             "'severity'?")


def test_parse_receiver_and_parse_route_share_the_loader_converter() -> None:
    """Receivers and routes parsed outside the loader give the same path format as the loader."""
    with pytest.raises(ConfigError) as ei:
        parse_receiver({"name": "s", "type": "slack", "url_env": "X", "min_interval_s": -1},
                       where="notify.receivers[2]")
    assert str(ei.value) == ("watchdog.yaml: notify.receivers[2].min_interval_s: Input should be greater than or "
                             "equal to 0 (use a number >= 0)")
    with pytest.raises(ConfigError) as ei2:
        parse_route({"routes": [{"recievers": []}]})
    assert str(ei2.value).startswith("watchdog.yaml: notify.route.routes[0].recievers: unknown key 'recievers' "
                                     "(did you mean 'receivers'?")


@pytest.mark.parametrize(
    ("yaml_runtime", "cls", "key", "value"),
    [
        ("{type: docker, container: v, max_concurrency: 2, compose_command: [podman-compose]}",
         DockerRuntimeSettings, "max_concurrency", 2),
        ("{type: systemd, unit: vllm, poll_interval_s: 3, no_block: false}", SystemdRuntimeSettings,
         "poll_interval_s", 3.0),
        ("{type: process, command: [sleep, '9'], log_buffer_lines: 99}", ProcessRuntimeSettings,
         "log_buffer_lines", 99),
    ],
)
def test_every_adapter_setting_is_settable_from_yaml(yaml_runtime: str, cls: type, key: str, value: object) -> None:
    """An adapter-only setting written in YAML reaches the adapter: the adapter holds the loaded model itself."""
    cfg = load(BASE + f"    runtime: {yaml_runtime}\n")
    t = cfg.targets[0]
    assert isinstance(t.runtime, cls)
    rt = build_runtime(t)
    assert rt is not None
    assert rt.settings is t.runtime  # type: ignore[attr-defined]
    assert getattr(rt.settings, key) == value  # type: ignore[attr-defined]


def test_no_second_runtime_settings_class_exists() -> None:
    """The old duplicate config classes are gone: the adapters' settings are the config's."""
    import watchdog.adapters.docker as docker_adapter
    import watchdog.config.models as models

    assert docker_adapter.DockerRuntimeSettings is DockerRuntimeSettings
    assert not hasattr(models, "DockerRuntimeConfig")
    assert not hasattr(models, "ReceiverConfig")


def test_log_catalog_typo_goes_through_the_same_converter(tmp_path: Path) -> None:
    """A typo in a log-catalog override gets the loader's did-you-mean (aliases such as `class` included)."""
    cat = tmp_path / "cat.yaml"
    cat.write_text("patterns:\n  - id: x\n    clas: engine_crash\n")
    with pytest.raises(ConfigError) as ei:
        LogCatalog.load(cat)
    assert f"{cat}:3: patterns[x].clas: unknown key 'clas' (did you mean 'class'? known keys: " in str(ei.value)


def test_env_overrides_reach_typed_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    """VLLM_WATCHDOG_HOST__GPU__ENABLED overrides one key of a typed section; a typo names the variable."""
    monkeypatch.setenv("VLLM_WATCHDOG_HOST__GPU__ENABLED", "false")
    cfg = load(BASE + "host:\n  gpu:\n    period_s: 3\n")
    assert cfg.host.gpu.enabled is False and cfg.host.gpu.period_s == 3
    monkeypatch.setenv("VLLM_WATCHDOG_HOST__GPU__EXPECTED_CNT", "2")
    out = problems(BASE)
    assert out[0].startswith("environment VLLM_WATCHDOG_HOST__GPU__EXPECTED_CNT: host.gpu.expected_cnt: unknown "
                             "key 'expected_cnt' (did you mean 'expected_count'?")
