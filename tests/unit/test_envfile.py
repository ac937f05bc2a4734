"""`.env` as setup writes it: private, read back as written, the user's own lines kept."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from oc_outpost.cli.envfile import quote, read_env, updated_text, write_env
from oc_outpost.opencode.version import Fit, judge


@pytest.mark.parametrize(
    "value",
    ["123456:AAE-x_y", "/home/me/my projects", "/srv/$HOME/100%", "it's", 'say "hi" \\ there'],
)
def test_values_read_back_exactly_as_written(tmp_path: Path, value: str) -> None:
    env = tmp_path / ".env"
    write_env(env, {"PROJECT_BASE_PATH": value})
    assert read_env(env) == {"PROJECT_BASE_PATH": value}


def test_plain_values_stay_bare_and_others_are_quoted() -> None:
    assert quote("-1001234567890") == "-1001234567890"
    assert quote("a b") == "'a b'"
    with pytest.raises(ValueError, match="span lines"):
        quote("a\nb")


def test_the_file_is_private_even_if_it_was_not(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("TELEGRAM_BOT_TOKEN=old\n")
    env.chmod(0o644)
    write_env(env, {"TELEGRAM_BOT_TOKEN": "new"})
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert read_env(env) == {"TELEGRAM_BOT_TOKEN": "new"}
    assert [p.name for p in tmp_path.iterdir()] == [".env"]  # no temporary file left


def test_an_update_keeps_comments_and_other_variables_in_place() -> None:
    old = "# mine\nA=1\nexport B=2\nB=3\nC=4\n"
    assert updated_text(old, {"B": "x", "D": "y"}) == "# mine\nA=1\nB=x\nC=4\nD=y\n"


@pytest.mark.parametrize(
    ("version", "fit"),
    [
        ("1.1.65", Fit.TESTED),
        ("1.18.33", Fit.TESTED),
        ("1.3.2", Fit.TESTED),
        ("1.1.64", Fit.OLDER),
        ("0.15.0", Fit.OLDER),
        ("1.18.34", Fit.NEWER),
        ("v1.10.0-beta", Fit.TESTED),
        ("dev", Fit.UNKNOWN),
    ],
)
def test_versions_are_compared_by_number(version: str, fit: Fit) -> None:
    assert judge(version).fit == fit
