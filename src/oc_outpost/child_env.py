"""The environment of the processes the bot starts (`opencode serve`, and so every agent tool).

A child gets the bot's own environment minus the bot's secrets and configuration: the agent runs
whatever a prompt (or a prompt injection) asks for, so it must never see the bot token, the API
key or anything that tells it where the bot keeps its state. What OpenCode itself reads
(`OPENCODE_CONFIG*`, provider API keys, `HOME`, `PATH`, ...) is passed on unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from oc_outpost.config import Settings, env_name

# Telegram variables whatever their name (a future setting, a wrapper script's own).
DENIED_PREFIXES: Final = ("TELEGRAM_",)
# Secrets of the bot that may be set before their setting exists in this version.
DENIED_EXTRA: Final = frozenset({"API_KEY", "STT_API_KEY"})


def bot_variables() -> frozenset[str]:
    """Every variable the bot's configuration reads (derived from Settings, so it cannot drift)."""
    return frozenset(env_name(name) for name in Settings.model_fields) | DENIED_EXTRA


def child_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """`parent` without the bot's secrets and configuration variables."""
    denied = bot_variables()
    return {
        name: value
        for name, value in parent.items()
        if name not in denied and not name.startswith(DENIED_PREFIXES)
    }
