"""Wire models of what a server offers: providers with their models (`GET /config/providers`)
and agents (`GET /agent`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from oc_outpost.opencode.wire import WireModel


class ModelLimit(WireModel):
    context: int = 0
    output: int = 0


class ModelInput(WireModel):
    text: bool = True
    image: bool = False
    pdf: bool = False


class ModelCapabilities(WireModel):
    input: ModelInput = ModelInput()


class ProviderModel(WireModel):
    id: str
    provider_id: str = Field("", alias="providerID")
    name: str = ""
    limit: ModelLimit = ModelLimit()
    capabilities: ModelCapabilities = ModelCapabilities()
    variants: dict[str, object] = Field(default_factory=dict)


class Provider(WireModel):
    id: str
    name: str = ""
    models: dict[str, ProviderModel] = Field(default_factory=dict)


class ProviderList(WireModel):
    providers: list[Provider] = Field(default_factory=list)
    default: dict[str, str] = Field(default_factory=dict)  # provider id -> its default model id


class Agent(WireModel):
    name: str
    description: str = ""
    mode: Literal["subagent", "primary", "all"] = "all"
    hidden: bool = False

    @property
    def is_primary(self) -> bool:
        return self.mode in ("primary", "all") and not self.hidden


class Command(WireModel):
    """A slash command of OpenCode (built in, from config, or a `.opencode/command/*.md` file)."""

    name: str
    description: str = ""
    template: str = ""
    source: str = ""  # command, mcp or skill (a skill is offered as a command of its name)

    @property
    def is_skill(self) -> bool:
        return self.source == "skill"

    @property
    def takes_arguments(self) -> bool:
        return "$ARGUMENTS" in self.template or "$1" in self.template
