"""What an `opencode serve` child (and so every agent tool command) inherits from the bot."""

from __future__ import annotations

from oc_outpost.child_env import bot_variables, child_environment
from oc_outpost.config import Settings, env_name

PARENT = {
    "PATH": "/usr/bin",
    "HOME": "/home/bot",
    "TELEGRAM_BOT_TOKEN": "123:secret",
    "TELEGRAM_SOMETHING_NEW": "x",
    "API_KEY": "api-secret",
    "STT_API_KEY": "stt-secret",
    "API_HOST": "127.0.0.1",
    "ORCHESTRATOR_DB_PATH": "/srv/bot/data/o.db",
    "TOPIC_DB_PATH": "/srv/bot/data/t.db",
    "PROJECT_BASE_PATH": "/srv/projects",
    "OPENCODE_MAX_INSTANCES": "3",
    "OPENCODE_PATH": "/opt/opencode",
    "OPENCODE_CONFIG": "/etc/opencode.json",
    "OPENCODE_CONFIG_CONTENT": "{}",
    "OPENCODE_CONFIG_DIR": "/etc/opencode",
    "ANTHROPIC_API_KEY": "provider-key",
    "OPENAI_API_KEY": "provider-key-2",
}


def test_the_bots_secrets_and_settings_are_not_inherited() -> None:
    child = child_environment(PARENT)
    for name in (
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_SOMETHING_NEW",
        "API_KEY",
        "STT_API_KEY",
        "API_HOST",
        "ORCHESTRATOR_DB_PATH",
        "TOPIC_DB_PATH",
        "PROJECT_BASE_PATH",
        "OPENCODE_MAX_INSTANCES",
        "OPENCODE_PATH",
    ):
        assert name not in child, name


def test_what_opencode_itself_needs_is_passed_on() -> None:
    child = child_environment(PARENT)
    for name in (
        "PATH",
        "HOME",
        "OPENCODE_CONFIG",
        "OPENCODE_CONFIG_CONTENT",
        "OPENCODE_CONFIG_DIR",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
    ):
        assert child[name] == PARENT[name]


def test_every_setting_of_the_bot_is_denied() -> None:
    every_setting = {env_name(name) for name in Settings.model_fields}
    assert every_setting <= bot_variables()
    child = child_environment(dict.fromkeys(every_setting, "value"))
    assert child == {}
