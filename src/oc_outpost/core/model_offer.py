"""What a server offers as models: its providers and the configured default, and which model a
topic's choice names (the server's default when the topic chose none)."""

from __future__ import annotations

from dataclasses import dataclass

from oc_outpost.model import TopicBinding
from oc_outpost.opencode.catalog import Provider, ProviderList, ProviderModel
from oc_outpost.opencode.client import OpenCodeClient


@dataclass(frozen=True)
class ModelOffer:
    """What a server offers: its providers, and the configured default model (if set)."""

    catalog: ProviderList
    configured: str | None

    @property
    def providers(self) -> list[Provider]:
        return self.catalog.providers

    def defaults(self) -> list[str]:
        """The configured default first, then each provider's own default."""
        refs = [f"{provider}/{model}" for provider, model in self.catalog.default.items()]
        return list(dict.fromkeys([self.configured, *refs] if self.configured else refs))


async def fetch_offer(client: OpenCodeClient) -> ModelOffer:
    """The server's providers and default model (raises OpenCodeError)."""
    return ModelOffer(await client.providers(), await client.default_model())


def all_models(offer: ModelOffer) -> dict[str, ProviderModel]:
    return {
        f"{provider.id}/{model_id}": model
        for provider in offer.providers
        for model_id, model in provider.models.items()
    }


def chosen_model(offer: ModelOffer, binding: TopicBinding) -> ProviderModel | None:
    """The topic's model as the server describes it (None: unknown to the server)."""
    ref = binding.model or next(iter(offer.defaults()), None)
    return None if ref is None else all_models(offer).get(ref)
