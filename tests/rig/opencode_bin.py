"""Locate (or install) the pinned OpenCode binary and build a hermetic environment for it.

`ensure_opencode()` works from a fresh machine that only has node/npm: it installs
`opencode-ai@<pinned>` into a per-user cache directory once, guarded by a file lock so that
parallel test runs do not race, and verifies `--version`.

`OC_OUTPOST_TEST_OPENCODE=<path>` runs the tests against that binary, whatever its version (the
compatibility run, `bench/compat.py`); `OC_OUTPOST_OPENCODE_BIN=<path>` names an existing binary
of the pinned version. `install_opencode()` installs any version into a cache directory.

`hermetic_env()` returns the environment *overrides* for one test run (reference §13). Callers
merge them over `os.environ` and must also drop the inherited variables named by
`INHERITED_VARS_TO_DROP` (see `merged_env()`), so a developer's own OpenCode password or config
never leaks into a test.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OPENCODE_VERSION = "1.18.33"
OPENCODE_PACKAGE = f"opencode-ai@{OPENCODE_VERSION}"
BIN_ENV_VAR = "OC_OUTPOST_OPENCODE_BIN"
ANY_VERSION_ENV_VAR = "OC_OUTPOST_TEST_OPENCODE"
CACHE_ENV_VAR = "OC_OUTPOST_TEST_CACHE"
INSTALL_TIMEOUT_S = 300.0
VERSION_TIMEOUT_S = 30.0
DEAD_REGISTRY = "http://127.0.0.1:9/"
MOCK_PROVIDER = "mock"
MOCK_MODEL = "mock-model"
DEFAULT_PERMISSION: dict[str, Any] = {"bash": "ask", "edit": "ask"}

# Inherited variables that would change how the server under test behaves or authenticates.
INHERITED_VARS_TO_DROP = (
    "OPENCODE_SERVER_PASSWORD",
    "OPENCODE_SERVER_USERNAME",
    "OPENCODE_CONFIG",
    "OPENCODE_CONFIG_DIR",
    "OPENCODE_PERMISSION",
    "OPENCODE_DB",
    "OPENCODE_MODELS_PATH",
    "OPENCODE_MODELS_URL",
)


class OpenCodeUnavailable(RuntimeError):
    """The pinned OpenCode binary could not be found, installed or verified."""


def cache_base() -> Path:
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override) if override else Path.home() / ".cache" / "oc-outpost-tests"


def default_cache_dir(version: str = OPENCODE_VERSION) -> Path:
    return cache_base() / f"opencode-{version}"


def ensure_opencode(cache_dir: Path | None = None) -> Path:
    """Return the path of a verified OpenCode binary: the pinned version, unless
    ``$OC_OUTPOST_TEST_OPENCODE`` names another one on purpose."""
    any_version = os.environ.get(ANY_VERSION_ENV_VAR)
    if any_version:
        binary = Path(any_version)
        if reported_version(binary) is None:
            raise OpenCodeUnavailable(
                f"${ANY_VERSION_ENV_VAR} points at {binary}, which does not answer `--version`"
            )
        return binary
    explicit = os.environ.get(BIN_ENV_VAR)
    if explicit:
        binary = Path(explicit)
        _verify_version(binary, source=f"${BIN_ENV_VAR}")
        return binary
    return install_opencode(OPENCODE_VERSION, cache_dir)


def install_opencode(version: str, cache_dir: Path | None = None) -> Path:
    """The binary of opencode-ai@``version``, installed with npm into ``cache_dir`` once."""
    cache = cache_dir if cache_dir is not None else default_cache_dir(version)
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / ".install.lock"):
        installed = _find_installed(cache, version)
        if installed is None:
            _npm_install(cache, f"opencode-ai@{version}")
            installed = _find_installed(cache, version)
        if installed is None:
            raise OpenCodeUnavailable(
                f"npm installed opencode-ai@{version} into {cache} but no runnable "
                f"{version} binary was found under {cache / 'node_modules'}"
            )
        return installed


def _candidate_binaries(cache: Path) -> list[Path]:
    modules = cache / "node_modules"
    # opencode.exe is what the postinstall step selected for this CPU (AVX2, musl); the platform
    # packages are the fallback when install scripts were disabled.
    candidates = [modules / "opencode-ai" / "bin" / "opencode.exe"]
    platform_dirs = sorted(modules.glob("opencode-*-*/bin/opencode"), key=_platform_preference)
    candidates.extend(platform_dirs)
    candidates.append(modules / ".bin" / "opencode")
    return [path for path in candidates if path.is_file() and os.access(path, os.X_OK)]


def _platform_preference(path: Path) -> tuple[int, str]:
    package = path.parent.parent.name
    penalty = ("baseline" in package) + ("musl" in package)
    return penalty, package


def _find_installed(cache: Path, version: str) -> Path | None:
    for candidate in _candidate_binaries(cache):
        if reported_version(candidate) == version:
            return candidate
    return None


def reported_version(binary: Path) -> str | None:
    """What ``binary --version`` prints, or None if it does not run."""
    try:
        result = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip()


def _verify_version(binary: Path, *, source: str) -> None:
    version = reported_version(binary)
    if version != OPENCODE_VERSION:
        raise OpenCodeUnavailable(
            f"{source} points at {binary}, whose `--version` reported {version!r}; "
            f"oc-outpost tests need OpenCode {OPENCODE_VERSION}"
        )


def _npm_install(cache: Path, package: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise OpenCodeUnavailable(
            f"npm is not on PATH; install Node.js/npm or set ${BIN_ENV_VAR} to an OpenCode "
            f"{OPENCODE_VERSION} binary"
        )
    command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), package]
    started = time.monotonic()
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OpenCodeUnavailable(
            f"`{' '.join(command)}` did not finish within {INSTALL_TIMEOUT_S:.0f} s"
        ) from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise OpenCodeUnavailable(
            f"`{' '.join(command)}` failed with exit code {result.returncode} after "
            f"{time.monotonic() - started:.1f} s:\n{tail}"
        )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def mock_provider_config(
    llm_base_url: str, *, permission: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """OpenCode config that routes every model call to the mock LLM at `llm_base_url`."""
    model_ref = f"{MOCK_PROVIDER}/{MOCK_MODEL}"
    return {
        "model": model_ref,
        "small_model": model_ref,
        "enabled_providers": [MOCK_PROVIDER],
        "autoupdate": False,
        "share": "disabled",
        "lsp": False,
        "formatter": False,
        "provider": {
            MOCK_PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Mock",
                "options": {"baseURL": llm_base_url, "apiKey": "x"},
                "models": {
                    MOCK_MODEL: {
                        "name": "Mock",
                        "tool_call": True,
                        "limit": {"context": 128000, "output": 4096},
                    }
                },
            }
        },
        "permission": dict(permission if permission is not None else DEFAULT_PERMISSION),
    }


def hermetic_env(
    scratch: Path, llm_base_url: str, *, permission: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Environment overrides that isolate an OpenCode server under `scratch` (reference §13).

    Creates the home/XDG directories and `$HOME/.npmrc` (dead registry, so OpenCode's background
    plugin install fails fast and harmlessly). The result is meant to be merged over
    `os.environ` with `INHERITED_VARS_TO_DROP` removed; `merged_env()` does exactly that.
    """
    home = scratch / "home"
    dirs = {
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_STATE_HOME": home / ".local" / "state",
    }
    for directory in (home, *dirs.values()):
        directory.mkdir(parents=True, exist_ok=True)
    (home / ".npmrc").write_text(f"registry={DEAD_REGISTRY}\n")
    config = mock_provider_config(llm_base_url, permission=permission)
    return {
        "HOME": str(home),
        **{name: str(path) for name, path in dirs.items()},
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "npm_config_registry": DEAD_REGISTRY,
        "OPENCODE_CONFIG_CONTENT": json.dumps(config, separators=(",", ":")),
    }


def merged_env(
    overrides: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`base` (default `os.environ`) without `INHERITED_VARS_TO_DROP`, then `overrides`."""
    source = os.environ if base is None else base
    env = {key: value for key, value in source.items() if key not in INHERITED_VARS_TO_DROP}
    env.update(overrides)
    return env
