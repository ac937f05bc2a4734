"""The per-topic model, variant and agent: pickers, choices, and what every prompt sends.

A picker is a `Menu` of control buttons (core/control_buttons.py), so a press after a restart
still works and a replayed press changes nothing. Favourites and recently used models come from
OpenCode's own state file (`model.json` in its state directory), then the configured default.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import Button, Menu
from oc_outpost.core.control_buttons import OUT_OF_DATE, ControlButtons, Pressed
from oc_outpost.core.errors import NotFound, Unavailable
from oc_outpost.core.model_offer import ModelOffer, all_models, chosen_model, fetch_offer
from oc_outpost.core.prompting import Prompter
from oc_outpost.model import TopicBinding
from oc_outpost.opencode.catalog import Agent, ProviderModel
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError

log = logging.getLogger(__name__)

PAGE_SIZE = 8
QUICK_MODELS = 6
LABEL_CHARS = 40
MODEL, PROVIDER, TOP, AGENT = "model", "provider", "top", "agent"
PICKER_KINDS = frozenset({MODEL, PROVIDER, TOP, AGENT})


@dataclass(frozen=True)
class Chosen:
    """A press that changed the topic's choice; `text` replaces the picker."""

    text: str


def opencode_state_file(environ: dict[str, str], home: Path) -> Path:
    """Where OpenCode keeps favourite and recent models (`$XDG_STATE_HOME/opencode/model.json`)."""
    state = environ.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(state) / "opencode" / "model.json"


def read_model_state(path: Path) -> list[str]:
    """Favourites, then recently used models, as "provider/model" (unreadable: none)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.debug("no model state in %s: %s", path, exc)
        return []
    refs: list[str] = []
    for key in ("favorite", "recent"):
        entries = data.get(key, []) if isinstance(data, dict) else []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("providerID") and entry.get("modelID"):
                refs.append(f"{entry['providerID']}/{entry['modelID']}")
    return list(dict.fromkeys(refs))


def short_label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


class Controls:
    def __init__(
        self,
        bindings: Bindings,
        prompter: Prompter,
        buttons: ControlButtons,
        model_state: Callable[[], list[str]],
    ) -> None:
        self._bindings = bindings
        self._prompter = prompter
        self._buttons = buttons
        self._model_state = model_state

    # --- models -------------------------------------------------------------------------------

    async def model_menu(self, binding: TopicBinding, query: str = "") -> Menu:
        """`/model [part of a name]`: quick picks and providers, or the models that match."""
        providers = await self._providers(binding)
        models = all_models(providers)
        query = query.strip().lower()
        if query:
            matches = [
                ref for ref, m in models.items() if query in ref.lower() or query in m.name.lower()
            ]
            if not matches:
                raise NotFound(f"No model matches “{query}”. /model lists them all.")
            rows = await self._model_rows(binding.topic_id, matches[: PAGE_SIZE * 2], models)
            return Menu(self._model_header(binding, f"Models matching “{query}”:"), rows)
        quick = [ref for ref in [*self._model_state(), *providers.defaults()] if ref in models]
        rows = await self._model_rows(
            binding.topic_id, list(dict.fromkeys(quick))[:QUICK_MODELS], models
        )
        provider_rows = [
            (await self._provider_button(binding.topic_id, p.id, 0, f"📦 {p.name or p.id}"),)
            for p in providers.providers
            if p.models
        ]
        text = self._model_header(binding, "Favourites and recent first, then each provider:")
        return Menu(text, rows + tuple(provider_rows))

    async def provider_menu(self, binding: TopicBinding, provider_id: str, page: int) -> Menu:
        providers = await self._providers(binding)
        provider = next((p for p in providers.providers if p.id == provider_id), None)
        if provider is None:
            raise NotFound(f"The provider {provider_id} is not configured any more; see /model.")
        refs = sorted(f"{provider.id}/{model_id}" for model_id in provider.models)
        pages = max(1, -(-len(refs) // PAGE_SIZE))
        page = min(max(page, 0), pages - 1)
        shown = refs[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
        rows = list(await self._model_rows(binding.topic_id, shown, all_models(providers)))
        topic_id = binding.topic_id
        navigation = [await self._buttons.button(TOP, topic_id, "⬅ Back")]
        if page > 0:
            navigation.append(
                await self._provider_button(topic_id, provider.id, page - 1, "◀ Prev")
            )
        if page + 1 < pages:
            navigation.append(
                await self._provider_button(topic_id, provider.id, page + 1, "Next ▶")
            )
        rows.append(tuple(navigation))
        title = f"{provider.name or provider.id}, page {page + 1} of {pages}:"
        return Menu(self._model_header(binding, title), tuple(rows))

    async def set_model(self, binding: TopicBinding, ref: str) -> TopicBinding:
        """Choose the topic's model by "provider/model" (its variant is reset)."""
        models = all_models(await self._providers(binding))
        if ref not in models:
            raise NotFound(f"Unknown model {ref}. /model lists the configured ones.")
        return await self._bindings.save(replace(binding, model=ref, variant=None))

    async def model_details(self, binding: TopicBinding) -> ProviderModel | None:
        """The topic's model as the server describes it (None: the server's default)."""
        return chosen_model(await self._providers(binding), binding)

    async def image_warning(self, binding: TopicBinding) -> str | None:
        """A warning when the topic's model cannot read images (None: it can, or unknown)."""
        try:
            model = await self.model_details(binding)
        except Unavailable as exc:
            log.info("could not check the model's image support: %s", exc)
            return None
        if model is None or model.capabilities.input.image:
            return None
        return (
            f"⚠️ The model {model.provider_id}/{model.id} cannot read images; "
            "it gets the file but may not see it. /model chooses another."
        )

    # --- agents -------------------------------------------------------------------------------

    async def agent_menu(self, binding: TopicBinding) -> Menu:
        agents = await self._primary_agents(binding)
        rows = []
        for agent in agents:
            mark = "✅ " if agent.name == binding.agent else ""
            label = short_label(f"{mark}{agent.name}")
            button = await self._buttons.button(AGENT, binding.topic_id, label, name=agent.name)
            rows.append((button,))
        current = binding.agent or "the server's default"
        return Menu(f"🤖 Agent for this topic: {current}. Choose one:", tuple(rows))

    async def set_agent(self, binding: TopicBinding, name: str) -> TopicBinding:
        names = [agent.name for agent in await self._primary_agents(binding)]
        if name not in names:
            raise NotFound(f"Unknown agent {name}. Primary agents here: {', '.join(names)}.")
        return await self._bindings.save(replace(binding, agent=name))

    # --- presses ------------------------------------------------------------------------------

    async def press(self, press: Pressed, who: str) -> Menu | Chosen:
        """A picker button (of `PICKER_KINDS`): navigate (a new menu) or choose."""
        binding, payload = press.binding, press.payload
        match press.kind:
            case "top":
                return await self.model_menu(binding)
            case "provider":
                return await self.provider_menu(binding, payload["provider"], payload["page"])
            case "model":
                await self.set_model(binding, payload["ref"])
                return Chosen(f"🧠 Model: {payload['ref']} (chosen by {who}).")
            case "agent":
                await self.set_agent(binding, payload["name"])
                return Chosen(f"🤖 Agent: {payload['name']} (chosen by {who}).")
            case _:
                raise NotFound(OUT_OF_DATE)

    # --- plumbing -----------------------------------------------------------------------------

    def _model_header(self, binding: TopicBinding, title: str) -> str:
        current = binding.model or "the server's default"
        variant = f" ({binding.variant})" if binding.variant else ""
        return f"🧠 Model for this topic: {current}{variant}.\n{title}"

    async def _model_rows(
        self, topic_id: int, refs: Sequence[str], models: dict[str, ProviderModel]
    ) -> tuple[tuple[Button, ...], ...]:
        rows = []
        for ref in refs:
            name = models[ref].name
            label = short_label(
                f"{ref} · {name}" if name and name != ref.partition("/")[2] else ref
            )
            rows.append((await self._buttons.button(MODEL, topic_id, label, ref=ref),))
        return tuple(rows)

    async def _provider_button(
        self, topic_id: int, provider_id: str, page: int, label: str
    ) -> Button:
        return await self._buttons.button(
            PROVIDER, topic_id, label, provider=provider_id, page=page
        )

    async def _providers(self, binding: TopicBinding) -> ModelOffer:
        """The server's providers; `default` starts with the configured default model."""
        client = await self._client(binding)
        try:
            return await fetch_offer(client)
        except OpenCodeError as exc:
            raise Unavailable(f"Could not list the models: {exc}") from exc

    async def _primary_agents(self, binding: TopicBinding) -> list[Agent]:
        client = await self._client(binding)
        try:
            agents = await client.agents()
        except OpenCodeError as exc:
            raise Unavailable(f"Could not list the agents: {exc}") from exc
        return [agent for agent in agents if agent.is_primary]

    async def _client(self, binding: TopicBinding) -> OpenCodeClient:
        return (await self._prompter.connect(binding)).client
