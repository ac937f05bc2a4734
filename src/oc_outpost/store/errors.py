"""Errors raised by the SQLite stores."""

from __future__ import annotations


class StoreError(Exception):
    """A storage operation failed."""


class NotFound(StoreError):
    """The row an update refers to does not exist."""


class MigrationError(StoreError):
    """The database schema could not be brought up to date."""
