"""oc-outpost: a Telegram forum supergroup as a control room for OpenCode coding agents."""

__version__ = "0.1.0"
