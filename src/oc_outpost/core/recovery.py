"""Reconciliation: catching up with OpenCode after events may have been missed.

OpenCode's event streams replay nothing, so after a stream reconnect, a server restart or a bot
restart core asks the server what it missed:

* `GET /session/status`: a bound session that is busy gets its turn tracked; one that core
  thought busy but is idle now has finished unseen, so its final answer is delivered from
  `GET /session/{id}/message` (or, when the last answer was cut off, the user is told so).
* `GET /permission` and `GET /question`: requests asked meanwhile get their buttons (approvals
  skip the ones already shown).

Per instance, one reconciliation runs at a time, and a turn is removed from the tracker before
its final answer is sent, so a final is never delivered twice. After a bot restart,
`StartupRecovery` settles the turns the journal names the same way, and follows the servers that
were found running again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from oc_outpost.core.approvals import Approvals
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import InstanceKind, TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.wire import MessageWithParts
from oc_outpost.servers.errors import InstanceError
from oc_outpost.servers.registry import ServerRegistry

log = logging.getLogger(__name__)

RECENT_MESSAGES = 20
CUT_OFF = (
    "The OpenCode server stopped during this turn, so it did not finish. "
    "Send your message again to continue."
)
NO_ANSWER = "OpenCode has no answer for this turn (it stopped first). Send your message again."


class Reconciler:
    def __init__(
        self,
        *,
        bindings: Bindings,
        turns: TurnTracker,
        approvals: Approvals,
        journal: TurnJournal,
    ) -> None:
        self._bindings = bindings
        self._turns = turns
        self._approvals = approvals
        self._journal = journal
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def reconcile(self, instance_id: str, client: OpenCodeClient) -> None:
        """Catch up with everything of the instance's bound sessions."""
        bound = [b for b in self._bindings.by_instance(instance_id) if b.session_id]
        if not bound:
            return
        async with self._locks[instance_id]:
            statuses = await client.session_status()
            for binding in bound:
                session_id = binding.session_id or ""
                busy = session_id in statuses
                if busy or self._turns.is_busy(session_id) or self._owed(session_id):
                    await self._settle(binding, client, busy=busy)
            await self._show_requests(instance_id, client, bound)

    def _owed(self, session_id: str) -> bool:
        """The journal still owes the session's answer and nothing is delivering it: a restart
        could not settle it then (its server's stream did not connect), so settle it now."""
        return self._journal.is_open(session_id) and not self._turns.is_delivering(session_id)

    async def settle(
        self, instance_id: str, client: OpenCodeClient, bindings: Sequence[TopicBinding]
    ) -> None:
        """Settle the turns of ``bindings`` (all served by the instance) from its status."""
        async with self._locks[instance_id]:
            statuses = await client.session_status()
            for binding in bindings:
                busy = (binding.session_id or "") in statuses
                await self._settle(binding, client, busy=busy)
            await self._show_requests(instance_id, client, bindings)

    async def _settle(self, binding: TopicBinding, client: OpenCodeClient, *, busy: bool) -> None:
        session_id = binding.session_id or ""
        if not busy and self._turns.is_delivering(session_id):
            return  # settled a moment ago (a stream reconnect and a restart's recovery met)
        if not busy and self._turns.is_busy(session_id) and not self._turns.is_accepted(session_id):
            # Its prompt is on its way (waiting for this very server): idle now says nothing
            # about this turn, and the stored answer is the previous turn's.
            return
        if busy:
            self._turns.reconcile(binding, client, busy=True)
            await self._journal.started(binding)
            return
        error = await _cut_off(client, binding.session_id or "")
        log.info("turn of %s ended unwatched: %s", binding.session_id, error or "answer complete")
        self._turns.reconcile(binding, client, busy=False, error=error)

    async def _show_requests(
        self, instance_id: str, client: OpenCodeClient, bound: Sequence[TopicBinding]
    ) -> None:
        by_session = {b.session_id: b for b in bound}
        try:
            permissions = await client.list_permissions()
            questions = await client.list_questions()
        except OpenCodeError as exc:
            log.warning("cannot list pending requests of %s: %s", instance_id, exc)
            return
        pending: list[ev.PermissionAsked | ev.QuestionAsked] = [
            *map(ev.PermissionAsked, permissions),
            *map(ev.QuestionAsked, questions),
        ]
        for event in pending:
            binding = by_session.get(self._turns.root_of(event.session_id))
            if binding is not None:
                await self._approvals.on_event(instance_id, binding, event)


async def _cut_off(client: OpenCodeClient, session_id: str) -> str | None:
    """Why the session's last turn has no complete answer, or None when it has one."""
    try:
        messages = await client.messages(session_id, limit=RECENT_MESSAGES)
    except OpenCodeError as exc:
        log.warning("cannot read the messages of %s: %s", session_id, exc)
        return None
    return cut_off_reason(messages)


def cut_off_reason(messages: Sequence[MessageWithParts]) -> str | None:
    """Why the last turn in `messages` has no complete answer, or None when it has one."""
    users = [i for i, m in enumerate(messages) if m.info.role == "user"]
    turn = messages[users[-1] :] if users else messages
    answers = [m.info for m in turn if m.info.role == "assistant"]
    if not answers:
        return NO_ANSWER
    last = answers[-1]
    if not last.completed and getattr(last, "error", None) is None:
        return CUT_OFF
    return None


class StartupRecovery:
    """After a bot restart: deliver what the previous run still owed (the journal's turns),
    then follow the servers found running again and catch up with them."""

    def __init__(
        self,
        *,
        reconciler: Reconciler,
        registry: ServerRegistry,
        bindings: Bindings,
        tracker: TurnTracker,
        journal: TurnJournal,
    ) -> None:
        self._reconciler = reconciler
        self._registry = registry
        self._bindings = bindings
        self._tracker = tracker
        self._journal = journal

    async def run(self) -> None:
        await self.recover_open_turns()
        await self.follow_running()

    async def recover_open_turns(self) -> None:
        by_server: dict[tuple[str, str], list[TopicBinding]] = defaultdict(list)
        for record in await self._journal.load():
            binding = self._bindings.by_session(record.session_id)
            if binding is None:
                await self._journal.finished(record.session_id)
                continue
            by_server[(binding.instance_id or "", binding.project_path)].append(binding)
        await asyncio.gather(*(self._recover_group(group) for group in by_server.values()))

    async def _recover_group(self, bindings: Sequence[TopicBinding]) -> None:
        first = bindings[0]
        try:
            running = await self._registry.connect(first.instance_id, Path(first.project_path))
            await self._reconciler.settle(running.info.id, running.client, bindings)
        except TimeoutError:
            # The server is there but its event stream did not connect in time (stalled): the
            # stream keeps trying, and its first connection reconciles these turns.
            log.warning("the turns of %s are settled once its stream connects", first.project_path)
        except (InstanceError, OpenCodeError, OSError) as exc:
            log.warning("could not recover the turns of %s: %s", first.project_path, exc)
            for binding in bindings:
                await self._tracker.fail(
                    binding.session_id or "",
                    binding.topic_id,
                    f"The bot restarted during this turn and OpenCode is not available: {exc}",
                )

    async def follow_running(self) -> None:
        """Servers found running at start-up (adopted, discovered, or external ones still
        registered): follow their bound sessions again and catch up (turns that ran or ended
        meanwhile, approvals asked while the bot was away)."""
        seen: set[tuple[str, str]] = set()
        for binding in self._bindings.all():
            key = (binding.instance_id or "", binding.project_path)
            kind = self._registry.kind(binding.instance_id)
            if key in seen:
                continue
            seen.add(key)
            if not self._runs_now(binding, kind):
                continue  # a stopped server is woken by the next message, not now
            try:
                running = await self._registry.connect(
                    binding.instance_id, Path(binding.project_path)
                )
                await self._reconciler.reconcile(running.info.id, running.client)
            except (InstanceError, OpenCodeError, TimeoutError) as exc:
                log.warning("following %s again failed: %s", binding.project_path, exc)

    def _runs_now(self, binding: TopicBinding, kind: InstanceKind) -> bool:
        if kind in (InstanceKind.DISCOVERED, InstanceKind.EXTERNAL):
            return self._registry.client(binding.instance_id) is not None
        return self._registry.manager.is_running(Path(binding.project_path))
