"""Why a server cannot be provided. The messages are fit for the user."""

from __future__ import annotations


class InstanceError(RuntimeError):
    """An OpenCode server could not be provided; the message is fit for the user."""


class InstanceBusy(InstanceError):
    """Every allowed server is busy, so no other one can be started now."""


class ServerGone(InstanceError):
    """A server the bot did not start (discovered or external) is not reachable any more."""
