"""SQLite persistence: instances (orchestrator DB), topic bindings, pending requests, bot state."""

from oc_outpost.store.bot_state import BotStateStore
from oc_outpost.store.db import Clock, Database, system_clock
from oc_outpost.store.errors import MigrationError, NotFound, StoreError
from oc_outpost.store.instances import KEEP, InstanceStore
from oc_outpost.store.migrations import ORCHESTRATOR_MIGRATIONS, TOPIC_MIGRATIONS
from oc_outpost.store.pending import PendingKind, PendingRequest, PendingStatus, PendingStore
from oc_outpost.store.topics import TopicStore

__all__ = [
    "KEEP",
    "ORCHESTRATOR_MIGRATIONS",
    "TOPIC_MIGRATIONS",
    "BotStateStore",
    "Clock",
    "Database",
    "InstanceStore",
    "MigrationError",
    "NotFound",
    "PendingKind",
    "PendingRequest",
    "PendingStatus",
    "PendingStore",
    "StoreError",
    "TopicStore",
    "system_clock",
]
