"""Pydantic models of the OpenCode 1.18 JSON bodies (responses, event properties, inputs).

Every model ignores unknown keys and accepts both the wire's camelCase names (`sessionID`) and
our snake_case field names. Defaults are chosen so that optional wire fields never fail
validation; unknown part types become `OtherPartWire`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Health(WireModel):
    healthy: bool
    version: str | None = None


class CacheTokens(WireModel):
    read: int = 0
    write: int = 0


class Tokens(WireModel):
    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache: CacheTokens = CacheTokens()
    total: int | None = None


class SessionTime(WireModel):
    created: int
    updated: int | None = None
    archived: int | None = None


class SessionRevert(WireModel):
    message_id: str = Field(alias="messageID")


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
    tokens: Tokens | None = None
    revert: SessionRevert | None = None  # set while messages are undone (until unrevert)


class MessageTime(WireModel):
    created: int
    completed: int | None = None


class MessageError(WireModel):
    """A provider or agent error such as APIError or MessageAbortedError."""

    name: str
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def message(self) -> str:
        message = self.data.get("message")
        return message if isinstance(message, str) else ""


class ModelRef(WireModel):
    provider_id: str = Field(alias="providerID")
    model_id: str = Field(alias="modelID")


class UserMessage(WireModel):
    id: str
    session_id: str = Field(alias="sessionID")
    role: Literal["user"]
    time: MessageTime
    agent: str | None = None
    model: ModelRef | None = None

    @property
    def completed(self) -> bool:
        return True


class AssistantMessage(WireModel):
    id: str
    session_id: str = Field(alias="sessionID")
    role: Literal["assistant"]
    time: MessageTime
    parent_id: str | None = Field(None, alias="parentID")
    provider_id: str | None = Field(None, alias="providerID")
    model_id: str | None = Field(None, alias="modelID")
    agent: str | None = None
    finish: str | None = None
    error: MessageError | None = None
    cost: float = 0.0
    tokens: Tokens = Tokens()

    @property
    def completed(self) -> bool:
        return self.time.completed is not None


MessageInfo = Annotated[UserMessage | AssistantMessage, Field(discriminator="role")]


class PartTime(WireModel):
    start: int | None = None
    end: int | None = None


class _PartBase(WireModel):
    id: str
    session_id: str | None = Field(None, alias="sessionID")
    message_id: str | None = Field(None, alias="messageID")


class TextPartWire(_PartBase):
    type: Literal["text"]
    text: str = ""
    synthetic: bool = False
    ignored: bool = False
    time: PartTime | None = None


class ReasoningPartWire(_PartBase):
    type: Literal["reasoning"]
    text: str = ""
    time: PartTime | None = None


class ToolState(WireModel):
    """One state of a tool call. Known `status` values: pending, running, completed, error."""

    status: str
    input: dict[str, Any] = Field(default_factory=dict)
    output: str | None = None
    error: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    time: PartTime | None = None


class ToolPartWire(_PartBase):
    type: Literal["tool"]
    call_id: str = Field("", alias="callID")
    tool: str
    state: ToolState


class StepStartPartWire(_PartBase):
    type: Literal["step-start"]


class StepFinishPartWire(_PartBase):
    type: Literal["step-finish"]
    reason: str = ""
    cost: float = 0.0
    tokens: Tokens = Tokens()


class FilePartWire(_PartBase):
    type: Literal["file"]
    mime: str = ""
    url: str = ""
    filename: str | None = None


class OtherPartWire(_PartBase):
    """Any part type we do not model (patch, agent, subtask, retry, compaction, ...)."""

    type: str


_KNOWN_PART_TYPES = frozenset({"text", "reasoning", "tool", "step-start", "step-finish", "file"})


def _part_tag(value: Any) -> str:
    part_type = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if isinstance(part_type, str) and part_type in _KNOWN_PART_TYPES:
        return part_type
    return "other"


PartWire = Annotated[
    Annotated[TextPartWire, Tag("text")]
    | Annotated[ReasoningPartWire, Tag("reasoning")]
    | Annotated[ToolPartWire, Tag("tool")]
    | Annotated[StepStartPartWire, Tag("step-start")]
    | Annotated[StepFinishPartWire, Tag("step-finish")]
    | Annotated[FilePartWire, Tag("file")]
    | Annotated[OtherPartWire, Tag("other")],
    Discriminator(_part_tag),
]


class MessageWithParts(WireModel):
    info: MessageInfo
    parts: list[PartWire] = Field(default_factory=list)


class SessionStatus(WireModel):
    """`busy`, `retry` (with attempt, message, next = epoch ms) or `idle`."""

    type: Literal["idle", "busy", "retry"]
    attempt: int | None = None
    message: str | None = None
    next: int | None = None


class ToolRef(WireModel):
    message_id: str = Field(alias="messageID")
    call_id: str = Field(alias="callID")


class PermissionRequest(WireModel):
    id: str
    session_id: str = Field(alias="sessionID")
    permission: str
    patterns: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    always: list[str] = Field(default_factory=list)
    tool: ToolRef | None = None


class QuestionOptionWire(WireModel):
    label: str
    description: str = ""


class QuestionInfo(WireModel):
    question: str
    header: str = ""
    options: list[QuestionOptionWire] = Field(default_factory=list)
    multiple: bool = False
    custom: bool = True  # OpenCode's documented default: typing a custom answer is allowed


class QuestionRequest(WireModel):
    id: str
    session_id: str = Field(alias="sessionID")
    questions: list[QuestionInfo]
    tool: ToolRef | None = None


class TodoWire(WireModel):
    content: str
    status: str = ""
    priority: str = ""


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
