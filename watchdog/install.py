"""`vllm-watchdog install systemd`: lay out the watchdog on a GPU host. Stage: deployment tooling (CLI).

Creates the system user, a virtualenv under the prefix with this project pip-installed into it, the
hardened systemd unit (paths rewritten to the chosen prefix and config directory), the config (from the
shipped example, never overwriting an existing one), the env-file example, and reloads systemd. The unit,
env example and example config are package data (`watchdog/data/systemd/`, `watchdog/data/examples/`:
symlinks to `systemd/` and `examples/systemd/` in the repository, real copies in a wheel), so the same
code works from a checkout and from an installed wheel; from a wheel, pip installs
`vllm-watchdog==<this version>` unless `--source` names a wheel or a directory. Every
step is printed as the equivalent shell command, so `--dry-run` is an exact, reviewable plan.
`--root DIR` prefixes every path written (staging, packaging, tests); `--skip-system` leaves out the
steps that change the host's accounts and service manager (useradd, chown, systemctl).

This module must never start, enable or restart any service, never overwrite an existing config or env
file, and never run anything through a shell.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watchdog import __version__

DEFAULT_PREFIX = "/opt/vllm-watchdog"
DEFAULT_CONFIG_DIR = "/etc/vllm-watchdog"
DEFAULT_UNIT_DIR = "/etc/systemd/system"
DEFAULT_USER = "vllm-watchdog"
DEFAULT_VLLM_CONFIG_DIR = "/srv/vllm"
STATE_DIR = "/var/lib/vllm-watchdog"
UNIT_NAME = "vllm-watchdog.service"

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_USAGE = 2


class InstallError(Exception):
    """A problem found before anything was changed (missing template, not root, ...)."""


@dataclass(frozen=True)
class Step:
    """One install step: what it does, the equivalent shell command, and the action itself."""

    description: str
    command: list[str] | None
    action: Callable[[], None] | None = None
    skip_reason: str | None = None

    def render(self) -> str:
        head = self.description + (f"  (skipped: {self.skip_reason})" if self.skip_reason else "")
        return head if self.command is None else f"{head}\n      $ {shlex.join(self.command)}"


@dataclass(frozen=True)
class InstallOptions:
    """Everything `install systemd` needs, resolved from the command line."""

    prefix: str = DEFAULT_PREFIX
    config_dir: str = DEFAULT_CONFIG_DIR
    unit_dir: str = DEFAULT_UNIT_DIR
    root: str = ""
    user: str = DEFAULT_USER
    vllm_config_dir: str = DEFAULT_VLLM_CONFIG_DIR
    source_dir: Path | None = None
    source: str | None = None
    pip_args: tuple[str, ...] = ()
    python: str = sys.executable
    config_example: Path | None = None
    skip_system: bool = False
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)

    def at(self, path: str) -> Path:
        """The path as written on disk: under `--root` when one is given."""
        p = Path(path)
        return Path(self.root) / p.relative_to("/") if self.root else p


DATA = Path(__file__).resolve().parent / "data"
SHIPPED_UNIT = DATA / "systemd" / UNIT_NAME
SHIPPED_ENV = DATA / "systemd" / "vllm-watchdog.env.example"
SHIPPED_CONFIG = DATA / "examples" / "systemd.yaml"


def shipped(path: Path) -> Path:
    """A package data file as its real path (in a checkout, what the symlink points at)."""
    return path.resolve()


def find_source_dir(start: Path | None = None) -> Path | None:
    """The checkout this package runs from (it holds pyproject.toml and systemd/), or None."""
    root = Path(__file__).resolve().parents[1] if start is None else start.resolve()
    if (root / "pyproject.toml").is_file() and (root / "systemd" / UNIT_NAME).is_file():
        return root
    return None


def find_config_example(source_dir: Path | None) -> Path | None:
    """The example config for a systemd deployment: the checkout's `examples/systemd/watchdog.yaml`, else the
    copy shipped as package data."""
    if source_dir is not None and (source_dir / "examples" / "systemd" / "watchdog.yaml").is_file():
        return source_dir / "examples" / "systemd" / "watchdog.yaml"
    return shipped(SHIPPED_CONFIG) if SHIPPED_CONFIG.is_file() else None


def render_unit(template: str, opts: InstallOptions) -> str:
    """The unit text with the shipped paths and user replaced by the chosen ones."""
    text = template.replace(DEFAULT_PREFIX, opts.prefix.rstrip("/")).replace(
        DEFAULT_CONFIG_DIR, opts.config_dir.rstrip("/")
    )
    text = text.replace(f"ReadWritePaths=-{DEFAULT_VLLM_CONFIG_DIR}", f"ReadWritePaths=-{opts.vllm_config_dir}")
    return text.replace(f"User={DEFAULT_USER}", f"User={opts.user}").replace(
        f"Group={DEFAULT_USER}", f"Group={opts.user}"
    )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _run(cmd: list[str]) -> Callable[[], None]:
    def action() -> None:
        subprocess.run(cmd, check=True)

    return action


def _mkdir(path: Path, mode: int) -> Callable[[], None]:
    def action() -> None:
        if not path.is_dir():  # an existing directory keeps its owner and mode
            path.mkdir(parents=True)
            path.chmod(mode)

    return action


def _write(dest: Path, text: str, mode: int, *, exclusive: bool) -> Callable[[], None]:
    def action() -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if exclusive:
            # "x": refuse to replace a file that appeared since the plan was made (never overwrite config).
            with open(dest, "x", encoding="utf-8") as f:
                f.write(text)
        else:
            tmp = dest.with_name(dest.name + ".tmp-install")
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(mode)
            os.replace(tmp, dest)
        dest.chmod(mode)

    return action


def _config_steps(opts: InstallOptions, cfg: Path, env_example: Path) -> list[Step]:
    """The config (from the example, never overwritten), the env example and the env file (0640, root:user)."""
    steps: list[Step] = []
    cfg_dest = cfg / "watchdog.yaml"
    example = opts.config_example
    if cfg_dest.exists():
        steps.append(Step(f"keep config {cfg_dest}", None, None, "exists, never overwritten"))
    elif example is None or not example.is_file():
        steps.append(Step(f"install config {cfg_dest}", None, None, "no example config found"))
        opts.notes.append(f"write {opts.config_dir}/watchdog.yaml yourself (see examples/), then run "
                          f"`vllm-watchdog check --config {opts.config_dir}/watchdog.yaml`")  # fmt: skip
    else:
        steps.append(
            Step(
                f"install config {cfg_dest} from {example}",
                ["install", "-m", "0644", str(example), str(cfg_dest)],
                _write(cfg_dest, example.read_text(), 0o644, exclusive=True),
            )
        )

    env_text = env_example.read_text()
    env_ex_dest = cfg / "watchdog.env.example"
    steps.append(
        Step(
            f"install env example {env_ex_dest}",
            ["install", "-m", "0644", str(env_example), str(env_ex_dest)],
            _write(env_ex_dest, env_text, 0o644, exclusive=False),
        )
    )
    env_dest = cfg / "watchdog.env"
    steps.append(
        Step(
            f"create env file {env_dest} (secrets go here; mode 0640)",
            ["install", "-m", "0640", str(env_example), str(env_dest)],
            _write(env_dest, env_text, 0o640, exclusive=True),
            "exists, never overwritten" if env_dest.exists() else None,
        )
    )
    chown_cmd = ["chown", f"root:{opts.user}", str(env_dest)]
    steps.append(Step(f"let group {opts.user} read {env_dest}", chown_cmd, _run(chown_cmd),
                      "--skip-system" if opts.skip_system else None))
    return steps


def plan_systemd(opts: InstallOptions) -> list[Step]:
    """Every step of `install systemd`, in order, with skips decided from the current state of the host."""
    src = opts.source_dir
    base = src / "systemd" if src is not None else None
    unit_template = base / UNIT_NAME if base is not None else shipped(SHIPPED_UNIT)
    env_example = base / "vllm-watchdog.env.example" if base is not None else shipped(SHIPPED_ENV)
    for f in (unit_template, env_example):
        if not f.is_file():
            raise InstallError(f"{f}: missing (needed to install the unit); pass --source-dir CHECKOUT or reinstall "
                               "the package")

    prefix, cfg, units = opts.at(opts.prefix), opts.at(opts.config_dir), opts.at(opts.unit_dir)
    venv = prefix / "venv"
    steps: list[Step] = []
    system_skip = "--skip-system" if opts.skip_system else None

    user_cmd = [
        "useradd", "--system", "--user-group", "--home-dir", STATE_DIR, "--no-create-home",
        "--shell", "/usr/sbin/nologin", "--comment", "vLLM watchdog", opts.user,
    ]  # fmt: skip
    exists = _user_exists(opts.user)
    steps.append(
        Step(
            f"create system user {opts.user}",
            user_cmd,
            _run(user_cmd),
            system_skip or ("user exists" if exists else None),
        )
    )
    if not _group_exists("docker"):
        opts.notes.append(
            "group 'docker' does not exist: the unit's SupplementaryGroups=docker will fail to start it. "
            "Install Docker first, or (vLLM not in Docker) drop the line with `systemctl edit vllm-watchdog`."
        )

    for path, mode in ((prefix, 0o755), (cfg, 0o755), (units, 0o755)):
        steps.append(Step(f"create directory {path}", ["install", "-d", "-m", f"{mode:04o}", str(path)],
                          _mkdir(path, mode)))  # fmt: skip

    venv_cmd = [opts.python, "-m", "venv", str(venv)]
    has_venv = (venv / "bin" / "python").exists()
    steps.append(Step(f"create virtualenv {venv}", venv_cmd, _run(venv_cmd), "exists, reused" if has_venv else None))
    source = opts.source or (str(src) if src is not None else f"vllm-watchdog=={__version__}")
    if opts.source is None and src is None:
        opts.notes.append(f"pip installs vllm-watchdog=={__version__} from the package index; offline, pass "
                          "--source WHEEL or --pip-arg=--no-index --pip-arg=--find-links=DIR")
    pip_cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--upgrade", *opts.pip_args, source]
    steps.append(Step(f"pip-install vllm-watchdog from {source}", pip_cmd, _run(pip_cmd)))

    unit_dest = units / UNIT_NAME
    steps.append(
        Step(
            f"install unit {unit_dest} (paths: prefix {opts.prefix}, config {opts.config_dir}, "
            f"writable vLLM config {opts.vllm_config_dir}; local changes belong in drop-ins)",
            ["install", "-m", "0644", str(unit_template), str(unit_dest)],
            _write(unit_dest, render_unit(unit_template.read_text(), opts), 0o644, exclusive=False),
        )
    )

    steps += _config_steps(opts, cfg, env_example)
    docs = src / "docs" / "deploy.md" if src is not None else None
    if docs is not None and docs.is_file():
        docs_dest = prefix / "docs" / "deploy.md"
        steps.append(
            Step(
                f"install docs {docs_dest}",
                ["install", "-D", "-m", "0644", str(docs), str(docs_dest)],
                _write(docs_dest, docs.read_text(), 0o644, exclusive=False),
            )
        )

    reload_cmd = ["systemctl", "daemon-reload"]
    steps.append(Step("reload systemd unit files", reload_cmd, _run(reload_cmd), system_skip))
    return steps


def _next_steps(opts: InstallOptions) -> str:
    c = opts.config_dir
    return "\n".join(
        [
            "next steps:",
            f"  1. edit {c}/watchdog.yaml and {c}/watchdog.env (secrets), then:",
            f"     {opts.prefix}/venv/bin/vllm-watchdog check --config {c}/watchdog.yaml",
            f"  2. if the vLLM config directory is not {opts.vllm_config_dir}: systemctl edit vllm-watchdog",
            "     ([Service] ReadWritePaths= then ReadWritePaths=-/your/dir)",
            "  3. systemctl enable --now vllm-watchdog && systemctl status vllm-watchdog",
        ]
    )


def execute(steps: Sequence[Step], *, dry_run: bool, out: Callable[[str], None] = print) -> int:
    """Print every step; run it unless `dry_run` or skipped. Stops at the first failure (exit 1)."""
    n = len(steps)
    for i, step in enumerate(steps, 1):
        out(f"[{i}/{n}] {step.render()}")
        if dry_run or step.skip_reason or step.action is None:
            continue
        try:
            step.action()
        except (OSError, subprocess.CalledProcessError) as e:
            out(f"error: step {i} failed ({step.description}): {e}")
            out("nothing after this step was done; fix the cause and run the installer again (it is idempotent)")
            return EXIT_STEP_FAILED
    return EXIT_OK


def options_from_args(args: argparse.Namespace) -> InstallOptions:
    """Resolve parsed arguments into `InstallOptions` (defaults discovered from the checkout)."""
    source_dir = Path(args.source_dir) if args.source_dir else find_source_dir()
    example = Path(args.config_example) if args.config_example else find_config_example(source_dir)
    for name in ("prefix", "config_dir", "unit_dir", "vllm_config_dir"):
        if not str(getattr(args, name)).startswith("/"):
            raise InstallError(f"--{name.replace('_', '-')}: must be an absolute path, got {getattr(args, name)!r}")
    return InstallOptions(
        prefix=args.prefix,
        config_dir=args.config_dir,
        unit_dir=args.unit_dir,
        root=os.path.abspath(args.root) if args.root else "",
        user=args.user,
        vllm_config_dir=args.vllm_config_dir,
        source_dir=source_dir,
        source=args.source,
        pip_args=tuple(args.pip_arg or ()),
        python=args.python,
        config_example=example,
        skip_system=args.skip_system,
        dry_run=args.dry_run,
    )


def add_install_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `install systemd ...` on the CLI's subparsers; sets `func=run_install` as default."""
    p = subparsers.add_parser("install", help="install the watchdog on this host (systemd service)")
    targets = p.add_subparsers(dest="install_target", metavar="TARGET", required=True)
    s = targets.add_parser(
        "systemd",
        help="virtualenv under --prefix, hardened systemd unit, config in --config-dir",
        description="Lay out vllm-watchdog as a systemd service. Prints each step as a shell command.",
    )
    s.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"install prefix (default {DEFAULT_PREFIX})")
    s.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, help=f"default {DEFAULT_CONFIG_DIR}")
    s.add_argument("--unit-dir", default=DEFAULT_UNIT_DIR, help=f"default {DEFAULT_UNIT_DIR}")
    s.add_argument(
        "--vllm-config-dir",
        default=DEFAULT_VLLM_CONFIG_DIR,
        help=f"the only directory the service may write besides its state (default {DEFAULT_VLLM_CONFIG_DIR})",
    )
    s.add_argument("--user", default=DEFAULT_USER, help=f"service user (default {DEFAULT_USER})")
    s.add_argument("--dry-run", action="store_true", help="print every step, change nothing")
    s.add_argument("--root", default="", help="prefix every written path with this directory (staging, tests)")
    s.add_argument(
        "--skip-system", action="store_true", help="skip useradd, chown and systemctl (staging, containers, tests)"
    )
    s.add_argument("--source-dir", default=None, help="the vllm-watchdog checkout (default: the running one, if "
                   "it runs from a checkout; else the unit and examples shipped in the package)")
    s.add_argument("--source", default=None, help="what pip installs (default: the checkout; or e.g. a wheel)")
    s.add_argument(
        "--pip-arg",
        action="append",
        metavar="ARG",
        help="extra pip argument, repeatable (offline: --pip-arg=--no-index --pip-arg=--find-links=/srv/wheels)",
    )
    s.add_argument("--python", default=sys.executable, help="interpreter for the virtualenv (>= 3.11)")
    s.add_argument("--config-example", default=None, help="config to install if none exists (default: "
                   "examples/systemd/watchdog.yaml, shipped in the package)")
    s.set_defaults(func=run_install)


def run_install(args: argparse.Namespace) -> int:
    """Run `install <target>` from parsed arguments. Returns 0 ok, 1 a step failed, 2 bad usage."""
    if getattr(args, "install_target", "systemd") != "systemd":
        print(f"error: unknown install target {args.install_target!r} (known: systemd)", file=sys.stderr)
        return EXIT_USAGE
    try:
        opts = options_from_args(args)
        if not opts.dry_run and not opts.root and os.geteuid() != 0:
            raise InstallError(
                "must run as root (it writes /etc, /opt and creates a user); use --dry-run to see the plan, "
                "or --root DIR --skip-system to stage into DIR"
            )
        steps = plan_systemd(opts)
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    mode = "dry run: nothing will be changed" if opts.dry_run else "installing"
    where = f" under root {opts.root}" if opts.root else ""
    print(f"vllm-watchdog {__version__} install systemd ({mode}){where}")
    rc = execute(steps, dry_run=opts.dry_run)
    for note in opts.notes:
        print(f"note: {note}")
    if rc == EXIT_OK:
        print(_next_steps(opts))
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m watchdog.install systemd ...` (the same as `vllm-watchdog install systemd ...`)."""
    parser = argparse.ArgumentParser(prog="vllm-watchdog")
    add_install_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["install", *(sys.argv[1:] if argv is None else argv)])
    return run_install(args)


if __name__ == "__main__":
    raise SystemExit(main())
