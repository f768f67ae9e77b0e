"""Every shipped example passes the full load that `vllm-watchdog check` and `run` do (config + shipped
policies merged with the user's + cross-checks): the issue measured the Kubernetes example failing with
exit 2 because a shipped step named a config file the target did not have."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from watchdog.cli import load_all
from watchdog.remediation.policy import load_policies

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "examples").rglob("*.y*ml") if "targets" in yaml.safe_load(p.read_text()))
POLICY_FILES = sorted(p for p in (ROOT / "examples").rglob("*.y*ml") if "policies" in yaml.safe_load(p.read_text()))
K8S = ROOT / "deploy" / "kubernetes" / "vllm-with-watchdog.yaml"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "example-key")


def test_there_are_examples_to_check() -> None:
    """The globs find the example configs and policy files (a moved directory must not empty this test)."""
    assert len(CONFIGS) >= 2 and POLICY_FILES


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_config_passes_the_full_load(path: Path) -> None:
    """`load_all` (what `check` runs) accepts the example; what it skips per target are warnings only."""
    cfg, ps = load_all(str(path))
    assert cfg.targets and ps.policies
    assert all(w.severity == "warning" for w in ps.warnings)


def test_kubernetes_configmap_passes_the_full_load(tmp_path: Path) -> None:
    """The watchdog.yaml inside the Kubernetes ConfigMap loads with the shipped policies: its target has no
    runtime and no config file, so those steps are warned about (skipped at run time), not errors."""
    cms = [d for d in yaml.safe_load_all(K8S.read_text()) if d and d.get("kind") == "ConfigMap"]
    texts = [cm["data"]["watchdog.yaml"] for cm in cms if "watchdog.yaml" in cm.get("data", {})]
    assert len(texts) == 1
    cfg_file = tmp_path / "watchdog.yaml"
    cfg_file.write_text(texts[0])
    cfg, ps = load_all(str(cfg_file))
    assert cfg.targets[0].runtime is None
    messages = [w.message for w in ps.warnings]
    assert any(m.startswith("no runtime configured") for m in messages)
    assert any(m.startswith("no config file named 'vllm-env'") for m in messages)


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_policy_file_merges_over_the_shipped_policies(path: Path) -> None:
    """An example policy file loads merged over the shipped policies (same names override them)."""
    shipped = load_policies([], shipped=ROOT / "policies" / "default.yaml")
    ps = load_policies([path], shipped=ROOT / "policies" / "default.yaml")
    assert {p.name for p in shipped.policies} <= {p.name for p in ps.policies}
