"""Configuration from environment variables (and a `.env` file), validated all at once.

`load_settings()` is the entry point: it merges `.env` with the environment (the environment
wins), validates every variable and raises one `ConfigError` listing every problem, each naming
the variable and the rule. Secret values never appear in reprs or error messages.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

MAX_PORT: Final = 65535
MIN_API_KEY_LENGTH: Final = 16
DEFAULT_ENV_FILE: Final = Path(".env")

# What each variable must be; used verbatim in error messages ("X must be <rule>, got '...'").
_RULES: Final[Mapping[str, str]] = {
    "telegram_bot_token": "the bot token from @BotFather",
    "telegram_chat_id": "an integer",
    "telegram_allowed_users": "a comma-separated list of integer user ids",
    "handle_general_topic": "true or false",
    "telegram_api_url": "an http:// or https:// URL",
    "telegram_rate_per_chat_interval_ms": "a non-negative integer (milliseconds)",
    "telegram_rate_group_per_minute": "an integer ≥ 1",
    "telegram_rate_global_per_second": "an integer ≥ 1",
    "opencode_path": "a non-empty path or command name",
    "opencode_max_instances": "an integer ≥ 1",
    "opencode_idle_timeout_ms": "a positive integer (milliseconds)",
    "opencode_port_start": "an integer between 1024 and 65535",
    "opencode_port_pool_size": "an integer ≥ 1",
    "opencode_health_check_interval_ms": "a positive integer (milliseconds)",
    "opencode_startup_timeout_ms": "a positive integer (milliseconds)",
    "opencode_shared_server": "true or false",
    "orchestrator_db_path": "a file path",
    "topic_db_path": "a file path",
    "project_base_path": "a directory path",
    "auto_create_project_dirs": "true or false",
    "api_host": "a host name or IP address",
    "api_port": "an integer between 1 and 65535",
    "api_key": f"a secret of at least {MIN_API_KEY_LENGTH} characters",
    "api_allowed_server_hosts": "a comma-separated list of host names or IP addresses",
    "log_format": "text or json",
    "topic_status": "icons or off",
    "board": "on or off",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    "stt_url": "an http:// or https:// URL",
    "stt_api_key": "a non-blank secret",
    "stt_model": "a non-empty model name",
}
_SECRET_FIELDS: Final = frozenset({"telegram_bot_token", "api_key", "stt_api_key"})
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE_WORDS: Final = frozenset({"true", "1"})
_FALSE_WORDS: Final = frozenset({"false", "0"})

# Set while load_settings() validates an explicit mapping, so that BaseSettings does not also
# read os.environ or ./.env behind its back.
_only_explicit_values: ContextVar[bool] = ContextVar("_only_explicit_values", default=False)


class ConfigError(Exception):
    """Every configuration problem found, one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        count = len(self.problems)
        header = f"Invalid configuration ({count} problem{'s' if count != 1 else ''}):"
        return "\n".join([header, *(f"  - {problem}" for problem in self.problems)])


class _CrossFieldProblems(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def env_name(field_name: str) -> str:
    return field_name.upper()


def is_loopback_host(host: str) -> bool:
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cross_field_problems(*, port_start: int | None, pool_size: int | None) -> list[str]:
    """Rules spanning several variables; `None` means that value is itself invalid (skip).

    There is no rule tying API_HOST to API_KEY: the API always requires a key (API_KEY, or one
    generated at first start), on loopback as on any other address."""
    problems: list[str] = []
    if port_start is not None and pool_size is not None and port_start + pool_size - 1 > MAX_PORT:
        problems.append(
            f"OPENCODE_PORT_START + OPENCODE_PORT_POOL_SIZE - 1 must be ≤ {MAX_PORT}, "
            f"got {port_start} + {pool_size} - 1 = {port_start + pool_size - 1}"
        )
    return problems


def _parse_bool(value: object) -> object:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ValueError("not a boolean")
    return value


def _parse_int_list(value: object) -> object:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        return tuple(int(item) for item in items if item)
    return value


_HOST_NAME_RE: Final = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
)


def _parse_host_list(value: object) -> object:
    if isinstance(value, str):
        hosts = [item.strip().lower().strip("[]") for item in value.split(",")]
        return tuple(_valid_host(host) for host in hosts if host)
    return value


def _valid_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if _HOST_NAME_RE.match(host):
            return host
        raise ValueError(f"not a host name: {host!r}") from None


class Settings(BaseSettings):
    """Validated configuration. Field `x_y` is read from variable `X_Y`."""

    model_config = SettingsConfigDict(
        env_file=DEFAULT_ENV_FILE,
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        # Errors must never echo the whole input: it holds the bot token.
        hide_input_in_errors=True,
    )

    telegram_bot_token: SecretStr
    telegram_chat_id: int
    telegram_allowed_users: Annotated[tuple[int, ...], NoDecode] = ()
    handle_general_topic: bool = True
    telegram_api_url: str = "https://api.telegram.org"
    # Telegram's flood limits as the Outbox budgets them (Telegram's published values).
    telegram_rate_per_chat_interval_ms: int = Field(default=1000, ge=0)
    telegram_rate_group_per_minute: int = Field(default=20, ge=1)
    telegram_rate_global_per_second: int = Field(default=30, ge=1)
    opencode_path: str = "opencode"
    opencode_max_instances: int = Field(default=10, ge=1)
    opencode_idle_timeout_ms: int = Field(default=1_800_000, gt=0)
    opencode_port_start: int = Field(default=4100, ge=1024, le=MAX_PORT)
    opencode_port_pool_size: int = Field(default=100, ge=1)
    opencode_health_check_interval_ms: int = Field(default=30_000, gt=0)
    opencode_startup_timeout_ms: int = Field(default=60_000, gt=0)
    opencode_shared_server: bool = False
    orchestrator_db_path: Path = Path("./data/orchestrator.db")
    topic_db_path: Path = Path("./data/topics.db")
    project_base_path: Path
    auto_create_project_dirs: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=4200, ge=1, le=MAX_PORT)
    api_key: SecretStr | None = None
    api_allowed_server_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    log_format: Literal["text", "json"] = "text"
    # Each bound topic's icon follows its state; the board is a pinned overview in General.
    topic_status: Literal["icons", "off"] = "icons"
    board: Literal["on", "off"] = "on"
    log_level: str = "INFO"
    # Speech to text for voice notes (OpenAI-compatible; unset: voice notes are declined).
    stt_url: str | None = None
    stt_api_key: SecretStr | None = None
    stt_model: str = "whisper-1"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _only_explicit_values.get():
            return (init_settings,)
        return init_settings, env_settings, dotenv_settings

    @field_validator(
        "handle_general_topic", "auto_create_project_dirs", "opencode_shared_server", mode="before"
    )
    @classmethod
    def _strict_bool(cls, value: object) -> object:
        return _parse_bool(value)

    @field_validator("telegram_allowed_users", mode="before")
    @classmethod
    def _int_list(cls, value: object) -> object:
        return _parse_int_list(value)

    @field_validator("api_allowed_server_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        return _parse_host_list(value)

    @field_validator("telegram_bot_token", "api_key", "stt_api_key", mode="before")
    @classmethod
    def _non_blank_secret(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("blank secret")
            return value.strip()
        return value

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_API_KEY_LENGTH:
            raise ValueError("too short")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError("not a log level")
        return level

    @field_validator("stt_url")
    @classmethod
    def _optional_http_url(cls, value: str | None) -> str | None:
        return None if value is None else cls._http_url(value)

    @field_validator("telegram_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = value.strip().rstrip("/")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in {"http", "https"} or not rest:
            raise ValueError("not an http(s) URL")
        return url

    @field_validator("opencode_path", "api_host", "stt_model")
    @classmethod
    def _non_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("blank")
        return value.strip()

    @field_validator("opencode_path")
    @classmethod
    def _expand_opencode_path(cls, value: str) -> str:
        return os.path.expanduser(value) if value.startswith("~") else value

    @field_validator("orchestrator_db_path", "topic_db_path")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("project_base_path")
    @classmethod
    def _absolute_dir(cls, value: Path) -> Path:
        return Path(os.path.abspath(value.expanduser()))

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> Settings:
        problems = cross_field_problems(
            port_start=self.opencode_port_start, pool_size=self.opencode_port_pool_size
        )
        if problems:
            raise _CrossFieldProblems(problems)
        return self

    @property
    def idle_timeout_s(self) -> float:
        return self.opencode_idle_timeout_ms / 1000

    @property
    def health_check_interval_s(self) -> float:
        return self.opencode_health_check_interval_ms / 1000

    @property
    def startup_timeout_s(self) -> float:
        return self.opencode_startup_timeout_ms / 1000

    @property
    def telegram_rate_per_chat_interval_s(self) -> float:
        return self.telegram_rate_per_chat_interval_ms / 1000

    @property
    def port_range(self) -> range:
        return range(
            self.opencode_port_start, self.opencode_port_start + self.opencode_port_pool_size
        )


class _DefaultEnvFile:
    """Marker for "use ./.env of the current working directory, if it exists"."""


_DEFAULT_ENV_FILE = _DefaultEnvFile()


def load_settings(
    env: Mapping[str, str] | None = None,
    env_file: Path | _DefaultEnvFile | None = _DEFAULT_ENV_FILE,
) -> Settings:
    """Validate the configuration or raise `ConfigError` listing every problem.

    env: variables to read (default `os.environ`). env_file: a dotenv file whose values are used
    where `env` has none; default `./.env` if present, `None` for no file. Names are matched
    exactly (upper case); empty values count as unset.
    """
    raw = _collect_raw_values(os.environ if env is None else env, env_file)
    token = _only_explicit_values.set(True)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe_errors(exc, raw)) from None
    finally:
        _only_explicit_values.reset(token)


def _collect_raw_values(
    env: Mapping[str, str], env_file: Path | _DefaultEnvFile | None
) -> dict[str, str]:
    merged = {**_read_env_file(env_file), **env}
    raw: dict[str, str] = {}
    for field_name in Settings.model_fields:
        value = merged.get(env_name(field_name))
        if value:
            raw[field_name] = value
    return raw


def _read_env_file(env_file: Path | _DefaultEnvFile | None) -> dict[str, str]:
    if env_file is None:
        return {}
    if isinstance(env_file, _DefaultEnvFile):
        path = DEFAULT_ENV_FILE
        if not path.is_file():
            return {}
    else:
        path = env_file
        if not path.is_file():
            raise ConfigError([f"env file {str(path)!r} does not exist or is not a file"])
    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def _describe_errors(exc: ValidationError, raw: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    invalid_fields: set[str] = set()
    for error in exc.errors():
        if not error["loc"]:
            problems.extend(_cross_field_messages(error))
            continue
        field_name = str(error["loc"][0])
        if field_name not in invalid_fields:
            invalid_fields.add(field_name)
            problems.append(_field_message(field_name, error))
    if invalid_fields:
        # Pydantic skips the model validator when a field fails; run the cross-field rules on
        # the raw values that did pass so that one run reports everything.
        problems.extend(_cross_field_problems_from_raw(raw, invalid_fields))
    return problems


def _field_message(field_name: str, error: ErrorDetails) -> str:
    name = env_name(field_name)
    if error["type"] == "missing":
        return f"{name} is required but not set"
    rule = _RULES.get(field_name, "valid")
    if field_name in _SECRET_FIELDS:
        return f"{name} must be {rule}"
    return f"{name} must be {rule}, got {_shown_input(error['input'])}"


def _shown_input(value: Any) -> str:
    return repr(value) if isinstance(value, str) else repr(str(value))


def _cross_field_messages(error: ErrorDetails) -> list[str]:
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _CrossFieldProblems):
        return list(cause.problems)
    return [error["msg"]]


def _cross_field_problems_from_raw(raw: Mapping[str, str], invalid_fields: set[str]) -> list[str]:
    def valid_value(field_name: str) -> Any:
        if field_name in invalid_fields:
            return None
        if field_name in raw:
            return raw[field_name]
        return Settings.model_fields[field_name].default

    port_start = valid_value("opencode_port_start")
    pool_size = valid_value("opencode_port_pool_size")
    return cross_field_problems(
        port_start=None if port_start is None else int(port_start),
        pool_size=None if pool_size is None else int(pool_size),
    )
