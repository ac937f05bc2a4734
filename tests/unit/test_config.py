"""Configuration loading: defaults, parsing rules, all-at-once errors, secret masking, `.env`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oc_outpost.config import ConfigError, Settings, load_settings

TOKEN = "123456:AAtopsecret-token-value"
API_KEY = "api-key-very-secret"
REQUIRED = {
    "TELEGRAM_BOT_TOKEN": TOKEN,
    "TELEGRAM_CHAT_ID": "-1001234567890",
    "PROJECT_BASE_PATH": "/srv/projects",
}
ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may see the developer's ./.env: the default env file is looked up in tmp_path."""
    monkeypatch.chdir(tmp_path)


def load(**overrides: str) -> Settings:
    return load_settings({**REQUIRED, **overrides}, env_file=None)


def problems_for(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env, env_file=None)
    return info.value.problems


def test_minimal_config_applies_every_default() -> None:
    settings = load()

    assert settings.telegram_bot_token.get_secret_value() == TOKEN
    assert settings.telegram_chat_id == -1001234567890
    assert settings.project_base_path == Path("/srv/projects")
    assert settings.telegram_allowed_users == ()
    assert settings.handle_general_topic is True
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.opencode_path == "opencode"
    assert settings.opencode_max_instances == 10
    assert settings.opencode_idle_timeout_ms == 1_800_000
    assert settings.opencode_port_start == 4100
    assert settings.opencode_port_pool_size == 100
    assert settings.opencode_health_check_interval_ms == 30_000
    assert settings.opencode_startup_timeout_ms == 60_000
    assert settings.opencode_shared_server is False
    assert settings.orchestrator_db_path == Path("data/orchestrator.db")
    assert settings.topic_db_path == Path("data/topics.db")
    assert settings.auto_create_project_dirs is True
    assert settings.api_host == "127.0.0.1"
    assert settings.api_port == 4200
    assert settings.api_key is None


def test_seconds_properties_and_port_range() -> None:
    settings = load(
        OPENCODE_IDLE_TIMEOUT_MS="1500",
        OPENCODE_HEALTH_CHECK_INTERVAL_MS="250",
        OPENCODE_STARTUP_TIMEOUT_MS="60000",
        OPENCODE_PORT_START="5000",
        OPENCODE_PORT_POOL_SIZE="3",
    )

    assert settings.idle_timeout_s == 1.5
    assert settings.health_check_interval_s == 0.25
    assert settings.startup_timeout_s == 60.0
    assert list(settings.port_range) == [5000, 5001, 5002]


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_each_required_variable_missing_is_reported(missing: str) -> None:
    env = {name: value for name, value in REQUIRED.items() if name != missing}

    assert problems_for(env) == [f"{missing} is required but not set"]


def test_all_required_missing_are_reported_in_one_error() -> None:
    problems = problems_for({})

    assert problems == [
        "TELEGRAM_BOT_TOKEN is required but not set",
        "TELEGRAM_CHAT_ID is required but not set",
        "PROJECT_BASE_PATH is required but not set",
    ]


def test_empty_value_counts_as_not_set() -> None:
    assert problems_for({**REQUIRED, "TELEGRAM_CHAT_ID": ""}) == [
        "TELEGRAM_CHAT_ID is required but not set"
    ]
    assert load(OPENCODE_MAX_INSTANCES="").opencode_max_instances == 10


def test_many_bad_variables_are_all_listed_at_once() -> None:
    problems = problems_for(
        {
            "TELEGRAM_CHAT_ID": "abc",
            "OPENCODE_MAX_INSTANCES": "0",
            "API_PORT": "70000",
            "HANDLE_GENERAL_TOPIC": "yes",
        }
    )

    assert problems == [
        "TELEGRAM_BOT_TOKEN is required but not set",
        "TELEGRAM_CHAT_ID must be an integer, got 'abc'",
        "HANDLE_GENERAL_TOPIC must be true or false, got 'yes'",
        "OPENCODE_MAX_INSTANCES must be an integer ≥ 1, got '0'",
        "PROJECT_BASE_PATH is required but not set",
        "API_PORT must be an integer between 1 and 65535, got '70000'",
    ]


def test_error_text_is_clean_and_multiline() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"TELEGRAM_CHAT_ID": "abc"}, env_file=None)
    text = str(info.value)

    assert text.splitlines() == [
        "Invalid configuration (3 problems):",
        "  - TELEGRAM_BOT_TOKEN is required but not set",
        "  - TELEGRAM_CHAT_ID must be an integer, got 'abc'",
        "  - PROJECT_BASE_PATH is required but not set",
    ]
    assert "pydantic" not in text.lower()
    assert info.value.__suppress_context__


@pytest.mark.parametrize("value", ["abc", "1.5", "12abc", "-"])
def test_telegram_chat_id_must_be_an_integer(value: str) -> None:
    assert problems_for({**REQUIRED, "TELEGRAM_CHAT_ID": value}) == [
        f"TELEGRAM_CHAT_ID must be an integer, got {value!r}"
    ]


@pytest.mark.parametrize("value", ["0", "-3", "ten", "2.5"])
def test_opencode_max_instances_must_be_at_least_one(value: str) -> None:
    assert problems_for({**REQUIRED, "OPENCODE_MAX_INSTANCES": value}) == [
        f"OPENCODE_MAX_INSTANCES must be an integer ≥ 1, got {value!r}"
    ]


@pytest.mark.parametrize("value", ["0", "65536", "-1", "http"])
def test_api_port_out_of_range(value: str) -> None:
    assert problems_for({**REQUIRED, "API_PORT": value}) == [
        f"API_PORT must be an integer between 1 and 65535, got {value!r}"
    ]


@pytest.mark.parametrize("value", ["1", "65535"])
def test_api_port_bounds_are_accepted(value: str) -> None:
    assert load(API_PORT=value).api_port == int(value)


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("OPENCODE_IDLE_TIMEOUT_MS", "0", "a positive integer (milliseconds)"),
        ("OPENCODE_HEALTH_CHECK_INTERVAL_MS", "-5", "a positive integer (milliseconds)"),
        ("OPENCODE_STARTUP_TIMEOUT_MS", "soon", "a positive integer (milliseconds)"),
        ("OPENCODE_PORT_START", "80", "an integer between 1024 and 65535"),
        ("OPENCODE_PORT_POOL_SIZE", "0", "an integer ≥ 1"),
    ],
)
def test_other_numeric_rules(name: str, value: str, rule: str) -> None:
    assert problems_for({**REQUIRED, name: value}) == [f"{name} must be {rule}, got {value!r}"]


def test_telegram_rate_limits_default_to_telegrams_values() -> None:
    settings = load()

    assert settings.telegram_rate_per_chat_interval_ms == 1000
    assert settings.telegram_rate_per_chat_interval_s == 1.0
    assert settings.telegram_rate_group_per_minute == 20
    assert settings.telegram_rate_global_per_second == 30


def test_telegram_rate_limits_can_be_changed() -> None:
    settings = load(
        TELEGRAM_RATE_PER_CHAT_INTERVAL_MS="0",
        TELEGRAM_RATE_GROUP_PER_MINUTE="60",
        TELEGRAM_RATE_GLOBAL_PER_SECOND="5",
    )

    assert settings.telegram_rate_per_chat_interval_s == 0.0
    assert settings.telegram_rate_group_per_minute == 60
    assert settings.telegram_rate_global_per_second == 5


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("TELEGRAM_RATE_PER_CHAT_INTERVAL_MS", "-1", "a non-negative integer (milliseconds)"),
        ("TELEGRAM_RATE_GROUP_PER_MINUTE", "0", "an integer ≥ 1"),
        ("TELEGRAM_RATE_GLOBAL_PER_SECOND", "fast", "an integer ≥ 1"),
    ],
)
def test_telegram_rate_limit_rules(name: str, value: str, rule: str) -> None:
    assert problems_for({**REQUIRED, name: value}) == [f"{name} must be {rule}, got {value!r}"]


def test_port_pool_must_fit_below_65535() -> None:
    problems = problems_for(
        {**REQUIRED, "OPENCODE_PORT_START": "65500", "OPENCODE_PORT_POOL_SIZE": "100"}
    )

    assert problems == [
        "OPENCODE_PORT_START + OPENCODE_PORT_POOL_SIZE - 1 must be ≤ 65535, "
        "got 65500 + 100 - 1 = 65599"
    ]
    assert load(OPENCODE_PORT_START="65436", OPENCODE_PORT_POOL_SIZE="100").port_range[-1] == 65535


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        (" false ", False),
        ("FALSE", False),
        ("1", True),
        ("0", False),
    ],
)
def test_bool_parsing_accepts_true_false_and_one_zero(value: str, expected: bool) -> None:
    settings = load(HANDLE_GENERAL_TOPIC=value, AUTO_CREATE_PROJECT_DIRS=value)

    assert settings.handle_general_topic is expected
    assert settings.auto_create_project_dirs is expected


@pytest.mark.parametrize("value", ["yes", "no", "on", "off", "t", "2", "truthy"])
def test_handle_general_topic_rejects_other_words(value: str) -> None:
    assert problems_for({**REQUIRED, "HANDLE_GENERAL_TOPIC": value}) == [
        f"HANDLE_GENERAL_TOPIC must be true or false, got {value!r}"
    ]


def test_auto_create_project_dirs_rejects_other_words() -> None:
    assert problems_for({**REQUIRED, "AUTO_CREATE_PROJECT_DIRS": "sure"}) == [
        "AUTO_CREATE_PROJECT_DIRS must be true or false, got 'sure'"
    ]


def test_opencode_shared_server_is_a_strict_bool() -> None:
    assert load(OPENCODE_SHARED_SERVER="true").opencode_shared_server is True
    assert load(OPENCODE_SHARED_SERVER="0").opencode_shared_server is False
    assert problems_for({**REQUIRED, "OPENCODE_SHARED_SERVER": "yes"}) == [
        "OPENCODE_SHARED_SERVER must be true or false, got 'yes'"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("42", (42,)),
        ("1,2,3", (1, 2, 3)),
        (" 7 , 8 ", (7, 8)),
        ("5,,6,", (5, 6)),
        (",", ()),
    ],
)
def test_allowed_users_list_parsing(value: str, expected: tuple[int, ...]) -> None:
    assert load(TELEGRAM_ALLOWED_USERS=value).telegram_allowed_users == expected


@pytest.mark.parametrize("value", ["1,abc", "alice", "1;2", "1.5"])
def test_allowed_users_rejects_non_integers(value: str) -> None:
    assert problems_for({**REQUIRED, "TELEGRAM_ALLOWED_USERS": value}) == [
        f"TELEGRAM_ALLOWED_USERS must be a comma-separated list of integer user ids, got {value!r}"
    ]


def test_project_base_path_expands_home_and_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))

    assert load(PROJECT_BASE_PATH="~/projects").project_base_path == home / "projects"
    assert load(PROJECT_BASE_PATH="rel/dir").project_base_path == tmp_path / "rel" / "dir"
    assert load(PROJECT_BASE_PATH="a/../b").project_base_path == tmp_path / "b"


def test_db_paths_and_opencode_path_expand_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load(
        TOPIC_DB_PATH="~/t.db", ORCHESTRATOR_DB_PATH="/var/o.db", OPENCODE_PATH="~/bin/opencode"
    )

    assert settings.topic_db_path == tmp_path / "home" / "t.db"
    assert settings.orchestrator_db_path == Path("/var/o.db")
    assert settings.opencode_path == str(tmp_path / "home" / "bin" / "opencode")


def test_telegram_api_url_default_and_override() -> None:
    assert load().telegram_api_url == "https://api.telegram.org"
    assert load(TELEGRAM_API_URL="http://127.0.0.1:8081/").telegram_api_url == (
        "http://127.0.0.1:8081"
    )
    assert load(TELEGRAM_API_URL="https://bot.example/api//").telegram_api_url == (
        "https://bot.example/api"
    )


@pytest.mark.parametrize("value", ["api.telegram.org", "ftp://x", "https://"])
def test_telegram_api_url_must_be_http(value: str) -> None:
    assert problems_for({**REQUIRED, "TELEGRAM_API_URL": value}) == [
        f"TELEGRAM_API_URL must be an http:// or https:// URL, got {value!r}"
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0", "192.168.1.5"])
def test_any_api_host_is_accepted_without_a_key_because_one_is_generated(host: str) -> None:
    settings = load(API_HOST=host)
    assert settings.api_host == host and settings.api_key is None


def test_cross_field_problem_is_listed_together_with_field_problems() -> None:
    problems = problems_for(
        {"TELEGRAM_CHAT_ID": "x", "OPENCODE_PORT_START": "65000", "OPENCODE_PORT_POOL_SIZE": "600"}
    )

    assert "TELEGRAM_CHAT_ID must be an integer, got 'x'" in problems
    assert (
        "OPENCODE_PORT_START + OPENCODE_PORT_POOL_SIZE - 1 must be ≤ 65535, "
        "got 65000 + 600 - 1 = 65599"
    ) in problems
    assert len(problems) == 4


def test_allowed_server_hosts_are_a_normalised_list() -> None:
    settings = load(API_ALLOWED_SERVER_HOSTS=" Build-Box.lan, 10.0.0.7 ,[::1],")
    assert settings.api_allowed_server_hosts == ("build-box.lan", "10.0.0.7", "::1")
    assert load().api_allowed_server_hosts == ()


@pytest.mark.parametrize("value", ["http://box", "box:4096", "a b", "box/x"])
def test_allowed_server_hosts_must_be_host_names(value: str) -> None:
    assert problems_for({**REQUIRED, "API_ALLOWED_SERVER_HOSTS": value}) == [
        "API_ALLOWED_SERVER_HOSTS must be a comma-separated list of host names or IP "
        f"addresses, got {value!r}"
    ]


def test_secrets_are_masked_in_repr_str_and_errors() -> None:
    settings = load(API_KEY=API_KEY)

    for text in (repr(settings), str(settings)):
        assert TOKEN not in text
        assert API_KEY not in text
        assert "**********" in text
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == API_KEY

    with pytest.raises(ConfigError) as info:
        load_settings(
            {**REQUIRED, "TELEGRAM_CHAT_ID": "bad", "API_KEY": "   "},
            env_file=None,
        )
    text = str(info.value) + repr(info.value) + repr(info.value.problems)
    assert TOKEN not in text
    assert "API_KEY must be a secret of at least 16 characters" in info.value.problems


def test_blank_token_is_rejected_without_echoing_it() -> None:
    assert problems_for({**REQUIRED, "TELEGRAM_BOT_TOKEN": "   "}) == [
        "TELEGRAM_BOT_TOKEN must be the bot token from @BotFather"
    ]


def test_env_file_is_read_and_real_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text(
        "# comment\n"
        f"TELEGRAM_BOT_TOKEN={TOKEN}\n"
        "TELEGRAM_CHAT_ID=-100111\n"
        "PROJECT_BASE_PATH=/from/file\n"
        "API_PORT=4300\n"
        "OPENCODE_MAX_INSTANCES=3\n"
        "UNRELATED=ignored\n",
        encoding="utf-8",
    )

    settings = load_settings({"API_PORT": "4400"}, env_file=env_file)

    assert settings.telegram_chat_id == -100111
    assert settings.project_base_path == Path("/from/file")
    assert settings.opencode_max_instances == 3
    assert settings.api_port == 4400


def test_dot_env_in_working_directory_is_read_by_default(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"TELEGRAM_BOT_TOKEN={TOKEN}\nTELEGRAM_CHAT_ID=5\nPROJECT_BASE_PATH=/p\nAPI_PORT=4500\n",
        encoding="utf-8",
    )

    settings = load_settings({"TELEGRAM_CHAT_ID": "6"})

    assert settings.telegram_chat_id == 6
    assert settings.api_port == 4500


def test_no_dot_env_in_working_directory_is_fine() -> None:
    assert load_settings(REQUIRED).api_port == 4200


def test_env_file_none_ignores_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("API_PORT=4500\n", encoding="utf-8")

    assert load_settings(REQUIRED, env_file=None).api_port == 4200


def test_explicit_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(REQUIRED, env_file=tmp_path / "nope.env")

    assert info.value.problems == [
        f"env file {str(tmp_path / 'nope.env')!r} does not exist or is not a file"
    ]


def test_default_env_comes_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENCODE_MAX_INSTANCES", "4")

    assert load_settings().opencode_max_instances == 4


def test_explicit_env_mapping_does_not_read_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "4999")

    assert load().api_port == 4200


def test_variable_names_are_matched_in_upper_case_only() -> None:
    assert load(api_port="4999").api_port == 4200


def test_settings_are_immutable() -> None:
    settings = load()

    with pytest.raises(ValueError, match="frozen"):
        settings.api_port = 1  # type: ignore[misc]


def test_env_example_documents_every_variable_with_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    documented = {
        match.group(1): index
        for index, line in enumerate(lines)
        if (match := re.match(r"^([A-Z_]+)=", line))
    }

    assert set(documented) == {name.upper() for name in Settings.model_fields}
    for index in documented.values():
        assert lines[index - 1].startswith("#"), lines[index]


def test_env_example_values_are_valid_when_required_ones_are_filled(tmp_path: Path) -> None:
    filled = ENV_EXAMPLE.read_text(encoding="utf-8").replace(
        "TELEGRAM_BOT_TOKEN=\n", f"TELEGRAM_BOT_TOKEN={TOKEN}\n"
    )
    filled = filled.replace("TELEGRAM_CHAT_ID=\n", "TELEGRAM_CHAT_ID=-100\n")
    env_file = tmp_path / "example.env"
    env_file.write_text(filled, encoding="utf-8")

    settings = load_settings({}, env_file=env_file)

    assert settings.api_key is None
    assert settings.telegram_allowed_users == ()


def test_plain_settings_class_reads_environment_and_dot_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "TELEGRAM_CHAT_ID=5\nPROJECT_BASE_PATH=/p\nTELEGRAM_ALLOWED_USERS=1, 2\n", encoding="utf-8"
    )
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "6")

    settings = Settings()

    assert settings.telegram_chat_id == 6
    assert settings.telegram_allowed_users == (1, 2)


def test_plain_settings_validation_error_hides_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "6")
    monkeypatch.setenv("PROJECT_BASE_PATH", "/p")
    monkeypatch.setenv("OPENCODE_PORT_START", "65500")

    with pytest.raises(ValueError) as info:
        Settings()

    assert "OPENCODE_PORT_POOL_SIZE - 1 must be" in str(info.value)
    assert TOKEN not in str(info.value)


def test_every_variable_has_a_rule_for_its_error_message() -> None:
    from oc_outpost.config import _RULES

    assert set(_RULES) == set(Settings.model_fields)


def test_a_short_api_key_is_refused_without_echoing_it() -> None:
    problems = problems_for({**REQUIRED, "API_KEY": "short-key"})
    assert problems == ["API_KEY must be a secret of at least 16 characters"]


def test_topic_status_and_board_default_on_and_are_checked() -> None:
    settings = load()
    assert (settings.topic_status, settings.board) == ("icons", "on")
    assert (load(TOPIC_STATUS="off", BOARD="off").topic_status, load(BOARD="off").board) == (
        "off",
        "off",
    )
    assert problems_for({**REQUIRED, "TOPIC_STATUS": "emoji", "BOARD": "yes"}) == [
        "TOPIC_STATUS must be icons or off, got 'emoji'",
        "BOARD must be on or off, got 'yes'",
    ]
