"""Failures a user reads. Every edge maps them: the chat replies with the message, the HTTP API
answers with a status per class (api/server.py)."""

from __future__ import annotations


class UserError(Exception):
    """A request cannot be done; the message says why and what to do instead."""


class BadRequest(UserError):
    """The input is wrong: a bad name, a path outside the base, a command in the wrong place."""


class NotFound(UserError):
    """What the request names does not exist (a project, a session, a registration)."""


class Conflict(UserError):
    """It exists already: the session or project is bound elsewhere."""


class Unavailable(UserError):
    """OpenCode cannot serve it now (a server down, unreachable, or all of them busy)."""
