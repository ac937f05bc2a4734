"""Pydantic models of the OpenCode 1.18 REST bodies that no event carries.

Messages, parts, statuses and permission/question requests are shared with the event stream
and live in events.py. Every model ignores unknown keys and accepts both the wire's camelCase
names (`projectID`) and our snake_case field names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from oc_outpost.opencode.events import Message, Part, TokenUsage


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Health(WireModel):
    healthy: bool
    version: str | None = None


class SessionTime(WireModel):
    created: int
    updated: int | None = None
    archived: int | None = None


class Session(WireModel):
    id: str
    slug: str = ""
    project_id: str = Field("", alias="projectID")
    directory: str
    parent_id: str | None = Field(None, alias="parentID")
    title: str
    version: str | None = None
    agent: str | None = None
    time: SessionTime
    cost: float | None = None
    tokens: TokenUsage | None = None


class MessageWithParts(WireModel):
    """One entry of `GET /session/{id}/message`."""

    info: Message
    parts: tuple[Part, ...] = ()


class TextInput(WireModel):
    """A text part of a prompt."""

    type: Literal["text"] = "text"
    text: str


class FileInput(WireModel):
    """A file part of a prompt; `url` is `file:///abs/path` or a `data:` URL."""

    type: Literal["file"] = "file"
    mime: str
    url: str
    filename: str | None = None


PromptPart = TextInput | FileInput
