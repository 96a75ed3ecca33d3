"""The systemd units: what they promise, and that systemd itself accepts them."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
SERVICE = SYSTEMD_DIR / "tstoraged.service"
TEMPLATE = SYSTEMD_DIR / "tstoraged@.service"
SYSUSERS = SYSTEMD_DIR / "tstoraged.sysusers"
INSTALLED_SCRIPT = "/opt/tstoraged/bin/tstoraged"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def directives(unit: Path) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values...]}}``; repeated keys (SystemCallFilter=) keep every value."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: Path, section: str, key: str) -> str:
    values = directives(unit)[section][key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


def seconds(value: str) -> float:
    for suffix, factor in (("min", 60.0), ("ms", 0.001), ("s", 1.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


@pytest.mark.parametrize("unit", [SERVICE, TEMPLATE], ids=["service", "template"])
def test_unit_is_a_notify_service_with_watchdog_reload_and_restart(unit: Path) -> None:
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert seconds(one(unit, "Service", "WatchdogSec")) > 0
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "User") == "tstoraged"
    # Longer than the default drain timeout (30 s), so a graceful stop is not killed.
    assert seconds(one(unit, "Service", "TimeoutStopSec")) > 30
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("unit", [SERVICE, TEMPLATE], ids=["service", "template"])
def test_unit_is_hardened(unit: Path) -> None:
    service = directives(unit)["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "UMask": "0027",
    }
    assert {key: service.get(key, ["<missing>"])[-1] for key in expected} == expected
    assert "@system-service" in service["SystemCallFilter"]


def test_single_unit_paths() -> None:
    assert one(SERVICE, "Service", "ExecStart") == (
        f"{INSTALLED_SCRIPT} run -c /etc/tstoraged/tstoraged.toml"
    )
    assert one(SERVICE, "Service", "StateDirectory") == "tstoraged"
    assert one(SERVICE, "Service", "ConfigurationDirectory") == "tstoraged"


def test_template_gives_each_instance_its_config_and_state() -> None:
    assert (
        one(TEMPLATE, "Service", "ExecStart") == f"{INSTALLED_SCRIPT} run -c /etc/tstoraged/%i.toml"
    )
    assert one(TEMPLATE, "Service", "StateDirectory") == "tstoraged/%i"
    assert "metrics port" in TEMPLATE.read_text()


def executable(tmp_path: Path) -> str:
    """The venv's tstoraged script, or a stand-in: verify only checks ExecStart exists."""
    script = Path(sys.executable).parent / "tstoraged"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    stand_in = tmp_path / "tstoraged"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    return str(stand_in)


def analyze(unit_file: Path, tmp_path: Path, name: str, *args: str) -> tuple[int, str]:
    """Run ``systemd-analyze <args> <name>`` on a copy whose ExecStart exists on this machine."""
    copy = tmp_path / unit_file.name
    copy.write_text(unit_file.read_text().replace(INSTALLED_SCRIPT, executable(tmp_path)))
    result = subprocess.run(
        ["systemd-analyze", *args, str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def verify(unit_file: Path, tmp_path: Path, name: str) -> None:
    """``systemd-analyze verify`` must say nothing at all.

    It exits 0 even for unknown keys or unparsable values (it only warns), so any output is
    a failure.
    """
    assert analyze(unit_file, tmp_path, name, "verify", "--man=no") == (0, "")


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_service(tmp_path: Path) -> None:
    verify(SERVICE, tmp_path, "tstoraged.service")


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_an_instance_of_the_template(tmp_path: Path) -> None:
    verify(TEMPLATE, tmp_path, "tstoraged@site-a.service")


@needs_systemd_analyze
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "src" / "tstoraged.service"
    broken.parent.mkdir()
    broken.write_text(SERVICE.read_text().replace("PrivateTmp=yes", "PrivateTmpp=yes"))
    with pytest.raises(AssertionError, match="Unknown key 'PrivateTmpp'"):
        verify(broken, tmp_path, "tstoraged.service")


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("unit", "name"),
    [(SERVICE, "tstoraged.service"), (TEMPLATE, "tstoraged@site-a.service")],
    ids=["service", "template"],
)
def test_hardening_keeps_the_exposure_level_low(unit: Path, name: str, tmp_path: Path) -> None:
    # systemd's own score, 0 (locked down) to 10 (unprotected); the units score 1.2.
    code, output = analyze(unit, tmp_path, name, "security", "--offline=yes", "--threshold=20")
    assert code == 0, output.splitlines()[-1]


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers absent")
def test_sysusers_file_creates_the_user_and_group(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", "--dry-run", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Creating group 'tstoraged'" in output
    assert "Creating user 'tstoraged'" in output


REFERENCE = SYSTEMD_DIR.parent / "config" / "tstoraged.toml"


def comments(unit: Path) -> str:
    return "\n".join(line for line in unit.read_text().splitlines() if line.startswith("#"))


@pytest.mark.parametrize("unit", [SERVICE, TEMPLATE], ids=["service", "template"])
def test_unit_comments_name_only_settings_that_exist(unit: Path) -> None:
    import re

    from tstoraged.config.model import Settings

    mentioned = re.findall(r"\[([a-z_.]+)\] ([a-z_]+)", comments(unit))
    assert mentioned, "the comments refer to settings as `[section] key`"
    for section, key in mentioned:
        model: object = Settings
        for part in section.split("."):
            model = model.model_fields[part].annotation  # type: ignore[attr-defined]
        assert key in model.model_fields, f"[{section}] {key}"  # type: ignore[attr-defined]
    credentials = re.findall(r"LoadCredential=([\w.-]+):", comments(unit))
    assert credentials
    for name in credentials:
        # A credential the config can actually use, shown in the reference config.
        assert f'credential = "{name}"' in REFERENCE.read_text(), name


def test_the_reference_config_leaves_state_dir_to_systemd(tmp_path: Path) -> None:
    from tstoraged.config import load_config

    env = {
        "STATE_DIRECTORY": str(tmp_path / "site-a"),
        "TSTORAGED_LOAD_PLUGINS": "codecs,generator,files",
    }
    settings = load_config(REFERENCE, env=env)
    assert settings.daemon.state_dir == tmp_path / "site-a"
    assert settings.daemon.dead_letter.file == tmp_path / "site-a" / "dead-letter.jsonl"
