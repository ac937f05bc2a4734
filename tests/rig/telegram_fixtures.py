"""Fixtures for the fake Telegram Bot API server."""
