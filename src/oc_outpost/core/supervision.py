"""Core's side of the OpenCode lifecycle.

`Supervision` is the `InstanceListener` the instance manager reports to: it tells the bound
topics when a server crashed, came back or could not be restarted, drops and reopens event
streams, and answers the manager's "is anything running there?" (never stop a busy server). It
also wires the event-stream hooks: activity for the idle clock, the turn journal, and
reconciliation after every reconnect; and it runs the start-up recovery of open turns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.outpost import Outpost
from oc_outpost.core.ports import ChatPort, TopicGone
from oc_outpost.core.reconcile import Reconciler
from oc_outpost.core.types import InstanceKind, TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.orchestrator.manager import InstanceError, InstanceManager, RunningInstance

log = logging.getLogger(__name__)

SERVER_DOWN = (
    "⚠️ The OpenCode server of this project stopped unexpectedly ({reason}). Restarting it…"
)
SERVER_BACK = "✅ OpenCode is running again."
SERVER_FAILED = "❌ OpenCode could not be restarted ({reason}). Send a message here to try again."
TURN_CUT = (
    "The OpenCode server stopped during this turn, so it did not finish. "
    "Send your message again once it is back."
)


class Supervision:
    def __init__(
        self,
        outpost: Outpost,
        instances: InstanceManager,
        journal: TurnJournal,
        chat: ChatPort,
        *,
        watchdog_s: float = 30.0,
    ) -> None:
        self._outpost = outpost
        self._instances = instances
        self._journal = journal
        self._chat = chat
        self._bindings = outpost.bindings
        self._turns = outpost.turns
        self._streams = outpost.streams
        self.reconciler = Reconciler(
            bindings=outpost.bindings,
            turns=outpost.turns,
            approvals=outpost.approvals,
            journal=journal,
            connect=self._connect,
        )
        self._recovery: asyncio.Task[None] | None = None
        outpost.streams.configure(
            watchdog_s=watchdog_s,
            on_reconnect=self._reconcile,
            on_activity=instances.touch,
            after_event=self._after_event,
        )
        instances.set_listener(self)

    def start(self) -> None:
        """Recover the turns left open by the previous run, in the background."""
        self._recovery = asyncio.create_task(self._recover(), name="recover-open-turns")

    async def stop(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)

    async def _recover(self) -> None:
        try:
            await self.reconciler.recover()
            await self._follow_adopted()
        except Exception:
            log.exception("catching up after the bot restart failed")

    async def _follow_adopted(self) -> None:
        """Servers found running at start-up (adopted or discovered): follow their bound
        sessions again and catch up (turns that ran or ended meanwhile, approvals asked)."""
        seen: set[tuple[str, str]] = set()
        for binding in self._bindings.all():
            key = (binding.instance_id or "", binding.project_path)
            if key in seen or self._outpost.externals.client(key[0]) is not None:
                continue  # external servers are followed by their registration
            seen.add(key)
            if not await self._runs_now(binding):
                continue  # a stopped server is woken by the next message, not now
            try:
                instance_id, client = await self._connect(binding)
                await self.reconciler.reconcile(instance_id, client)
            except (InstanceError, OpenCodeError, TimeoutError) as exc:
                log.warning("following %s again failed: %s", binding.project_path, exc)

    async def _runs_now(self, binding: TopicBinding) -> bool:
        instance_id = binding.instance_id or ""
        if await self._instances.kind_of(instance_id) == InstanceKind.DISCOVERED:
            return self._instances.get(instance_id) is not None
        return self._instances.is_running(Path(binding.project_path))

    async def _connect(self, binding: TopicBinding) -> tuple[str, OpenCodeClient]:
        """The binding's server, with its event stream (a managed one is started if needed)."""
        instance_id = binding.instance_id or ""
        external = self._outpost.externals.client(instance_id)
        if external is not None:
            return instance_id, external
        if await self._instances.kind_of(instance_id) == InstanceKind.DISCOVERED:
            discovered = self._instances.get(instance_id)
            if discovered is None:
                raise InstanceError("the OpenCode server this topic was connected to is gone")
            await self._streams.ensure(instance_id, discovered.client)
            return instance_id, discovered.client
        running = await self._outpost.ensure_server(Path(binding.project_path))
        return running.info.id, running.client

    async def _reconcile(self, instance_id: str, client: OpenCodeClient) -> None:
        try:
            await self.reconciler.reconcile(instance_id, client)
        except OpenCodeError as exc:
            log.warning("reconciling %s failed: %s", instance_id, exc)

    async def _after_event(self, instance_id: str, event: ev.Event) -> None:
        session_id = getattr(event, "session_id", None)
        if not isinstance(session_id, str):
            return
        root = self._turns.root_of(session_id)
        if self._turns.is_busy(root) and not self._journal.is_open(root):
            binding = self._bindings.by_session(root)
            if binding is not None:
                await self._journal.started(binding)

    # --- InstanceListener -------------------------------------------------------------------

    def is_busy(self, instance_id: str) -> bool:
        return any(
            self._turns.is_busy(b.session_id)
            for b in self._bindings.by_instance(instance_id)
            if b.session_id
        )

    async def instance_down(self, instance_ids: Sequence[str], reason: str) -> None:
        for instance_id in instance_ids:
            await self._streams.drop(instance_id)
        await self._tell(instance_ids, SERVER_DOWN.format(reason=reason))
        # The process is gone: its running turns are lost (what it had not yet written may not
        # even be in its database), so say so now rather than guess after the restart.
        await self._fail_turns(instance_ids, TURN_CUT)

    async def instance_up(self, instances: Sequence[RunningInstance]) -> None:
        for running in instances:
            instance_id = running.info.id
            try:
                await self._streams.restart(instance_id, running.client)
                await self.reconciler.reconcile(instance_id, running.client)
            except (OpenCodeError, TimeoutError) as exc:
                log.warning("catching up with %s after its restart failed: %s", instance_id, exc)
        await self._tell([r.info.id for r in instances], SERVER_BACK)

    async def instance_failed(self, instance_ids: Sequence[str], reason: str) -> None:
        await self._fail_turns(instance_ids, TURN_CUT)
        await self._tell(instance_ids, SERVER_FAILED.format(reason=reason))

    async def _fail_turns(self, instance_ids: Sequence[str], message: str) -> None:
        for binding in self._topics(instance_ids):
            if binding.session_id and self._turns.is_busy(binding.session_id):
                await self._turns.fail(binding.session_id, binding.topic_id, message)

    async def instance_stopped(self, instance_ids: Sequence[str], reason: str) -> None:
        log.info("OpenCode %s stopped (%s)", ", ".join(instance_ids), reason)
        for instance_id in instance_ids:
            await self._streams.drop(instance_id)

    def _topics(self, instance_ids: Iterable[str]) -> list[TopicBinding]:
        return [b for i in instance_ids for b in self._bindings.by_instance(i)]

    async def _tell(self, instance_ids: Iterable[str], text: str) -> None:
        for binding in self._topics(instance_ids):
            try:
                await self._chat.notify(binding.topic_id, text)
            except TopicGone:
                log.info("topic %d is gone; not told: %s", binding.topic_id, text)
