"""Shared test fixtures live in tests/rig; each rig module is a pytest plugin."""

pytest_plugins = [
    "tests.rig.opencode_fixtures",
    "tests.rig.telegram_fixtures",
    "tests.rig.bot_fixtures",
    "tests.rig.process_bot",
]
