"""`oc-outpost service install|uninstall`: the user unit, as text and as systemd sees it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oc_outpost.cli.main import cli
from oc_outpost.cli.service import MARKER, UNIT_NAME, UnitSpec, unit_text

EXECUTABLE = Path(sys.executable).parent / "oc-outpost"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["service", *args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "my bot"  # a space, as home directories sometimes have
    work.mkdir()
    (work / ".env").write_text("TELEGRAM_BOT_TOKEN=1:x\n")
    return work


def service_lines(unit: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )


def test_install_writes_a_unit_that_restarts_the_bot_and_says_how_to_enable_it(
    workdir: Path, tmp_path: Path
) -> None:
    units = tmp_path / "units"
    code, out = invoke("install", "--unit-dir", str(units), "--env-file", str(workdir / ".env"))
    assert code == 0, out
    unit = (units / UNIT_NAME).read_text()
    fields = service_lines(unit)
    assert fields["WorkingDirectory"] == str(workdir)
    assert fields["EnvironmentFile"] == str(workdir / ".env")
    assert fields["ExecStart"] == f"{EXECUTABLE} run"
    assert Path(fields["ExecStart"].rsplit(" ", 1)[0]).is_absolute()
    assert fields["Restart"] == "on-failure"
    assert fields["KillSignal"] == "SIGTERM"
    assert fields["KillMode"] == "mixed"  # SIGTERM to the bot only: it stops its servers itself
    assert fields["WantedBy"] == "default.target"
    assert "systemctl --user enable --now oc-outpost.service" in out
    assert "loginctl enable-linger" in out
    assert "systemctl --user daemon-reload" in out

    if shutil.which("systemd-analyze"):  # not on every machine; the text checks above always run
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(units / UNIT_NAME)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # It exits 0 even for a bad setting; what it found is printed with the file's name.
        assert verify.returncode == 0, verify.stderr
        assert UNIT_NAME not in verify.stdout + verify.stderr, verify.stdout + verify.stderr


def test_the_unit_directory_follows_xdg_config_home(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    code, out = invoke("install", "--env-file", str(workdir / ".env"))
    assert code == 0, out
    unit = tmp_path / "config" / "systemd" / "user" / UNIT_NAME
    assert unit.read_text().startswith(MARKER)

    enabled = unit.parent / "default.target.wants" / UNIT_NAME
    enabled.parent.mkdir()
    enabled.symlink_to(unit)  # what `systemctl --user enable` leaves
    code, out = invoke("uninstall")
    assert code == 0, out
    assert not unit.exists()
    assert not enabled.is_symlink()
    assert "systemctl --user stop oc-outpost.service" in out
    assert invoke("uninstall") == (0, "No oc-outpost.service is installed.\n")


def test_a_unit_not_written_by_us_is_left_alone(workdir: Path, tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    theirs = units / UNIT_NAME
    theirs.write_text("[Service]\nExecStart=/bin/true\n")
    code, out = invoke("install", "--unit-dir", str(units), "--env-file", str(workdir / ".env"))
    assert code == 1
    assert "was not written by oc-outpost" in out
    code, out = invoke("uninstall", "--unit-dir", str(units))
    assert code == 1
    assert theirs.read_text() == "[Service]\nExecStart=/bin/true\n"


def test_install_needs_the_env_file(tmp_path: Path) -> None:
    code, out = invoke("install", "--unit-dir", str(tmp_path), "--env-file", str(tmp_path / ".env"))
    assert code == 1
    assert "run `oc-outpost setup` first" in out
    assert not (tmp_path / UNIT_NAME).exists()


def test_paths_with_spaces_and_percent_signs_are_escaped_for_systemd() -> None:
    spec = UnitSpec(
        Path("/opt/my tools/oc-outpost"), Path("/srv/100%/bot"), Path("/srv/100%/bot/.env")
    )
    fields = service_lines(unit_text(spec))
    assert fields["ExecStart"] == '"/opt/my tools/oc-outpost" run'
    assert fields["WorkingDirectory"] == "/srv/100%%/bot"
    assert fields["EnvironmentFile"] == "/srv/100%%/bot/.env"
