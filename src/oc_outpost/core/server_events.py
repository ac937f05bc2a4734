"""What the servers tell core: `ServerEvents` is the `ServerListener` the event streams and the
instance manager report to.

Events are routed by session (sub-agent sessions to their parent's turn) to approvals and the
turn tracker; a turn seen busy is written in the journal. After a stream reconnect or a restart
the reconciler catches up. Crashes, restarts and failures are told in the bound topics, and "is
anything running there?" is answered so a busy server is never stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from oc_outpost.core.approvals import Approvals
from oc_outpost.core.bindings import Bindings
from oc_outpost.core.chat import ChatPort, TopicGone
from oc_outpost.core.journal import TurnJournal
from oc_outpost.core.recovery import Reconciler
from oc_outpost.core.topic_states import TopicStates
from oc_outpost.core.tracker import TurnTracker
from oc_outpost.model import TopicBinding
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.servers.listener import RunningInstance

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


class ServerEvents:
    def __init__(
        self,
        *,
        chat: ChatPort,
        bindings: Bindings,
        tracker: TurnTracker,
        approvals: Approvals,
        journal: TurnJournal,
        reconciler: Reconciler,
        states: TopicStates | None = None,
    ) -> None:
        self._chat = chat
        self._bindings = bindings
        self._tracker = tracker
        self._approvals = approvals
        self._journal = journal
        self._reconciler = reconciler
        self._states = states

    # --- the event streams --------------------------------------------------------------------

    async def on_event(self, instance_id: str, client: OpenCodeClient, event: ev.Event) -> None:
        if isinstance(event, ev.SessionCreated) and event.parent_id:
            self._tracker.note_child(event.session_id, event.parent_id)
            return
        session_id = getattr(event, "session_id", None)
        if not isinstance(session_id, str):
            return
        root = self._tracker.root_of(session_id)
        binding = self._bindings.by_session(root)
        if binding is None:
            return
        try:
            await self._approvals.on_event(instance_id, binding, event)
        except Exception:  # its row stays; the next reconnect or start shows it again
            log.exception("the request of %s could not be shown", root)
        await self._tracker.on_event(client, event)
        if self._tracker.is_busy(root) and not self._journal.is_open(root):
            await self._journal.started(binding)

    async def on_reconnect(self, instance_id: str, client: OpenCodeClient) -> None:
        try:
            await self._reconciler.reconcile(instance_id, client)
        except OpenCodeError as exc:
            log.warning("reconciling %s failed: %s", instance_id, exc)

    # --- the instance manager -----------------------------------------------------------------

    def is_busy(self, instance_id: str) -> bool:
        return any(
            self._tracker.is_busy(b.session_id)
            for b in self._bindings.by_instance(instance_id)
            if b.session_id
        )

    async def instance_down(self, instance_ids: Sequence[str], reason: str) -> None:
        await self._tell(instance_ids, SERVER_DOWN.format(reason=reason))
        # The process is gone: its running turns are lost (what it had not yet written may not
        # even be in its database), so say so now rather than guess after the restart.
        await self._fail_turns(instance_ids, TURN_CUT)

    async def instance_up(self, instances: Sequence[RunningInstance]) -> None:
        for running in instances:
            try:
                await self._reconciler.reconcile(running.info.id, running.client)
            except (OpenCodeError, TimeoutError) as exc:
                log.warning(
                    "catching up with %s after its restart failed: %s", running.info.id, exc
                )
        await self._tell([r.info.id for r in instances], SERVER_BACK)

    async def instance_failed(self, instance_ids: Sequence[str], reason: str) -> None:
        await self._fail_turns(instance_ids, TURN_CUT)
        self._asleep(instance_ids)
        await self._tell(instance_ids, SERVER_FAILED.format(reason=reason))

    async def instance_stopped(self, instance_ids: Sequence[str], reason: str) -> None:
        log.info("OpenCode %s stopped (%s)", ", ".join(instance_ids), reason)
        self._asleep(instance_ids)

    def _asleep(self, instance_ids: Sequence[str]) -> None:
        if self._states is not None:
            self._states.servers_stopped(b.topic_id for b in self._topics(instance_ids))

    async def _fail_turns(self, instance_ids: Sequence[str], message: str) -> None:
        """End the turns OpenCode had; a prompt still on its way is sent again by prompting."""
        for binding in self._topics(instance_ids):
            if binding.session_id and self._tracker.is_accepted(binding.session_id):
                await self._tracker.fail(binding.session_id, binding.topic_id, message)

    def _topics(self, instance_ids: Iterable[str]) -> list[TopicBinding]:
        return [b for i in instance_ids for b in self._bindings.by_instance(i)]

    async def _tell(self, instance_ids: Iterable[str], text: str) -> None:
        """A notice to each topic; one that cannot be delivered (Telegram unreachable) must not
        stop what follows it: failing the turns, restarting the server."""
        for binding in self._topics(instance_ids):
            try:
                await self._chat.notify(binding.topic_id, text)
            except TopicGone:
                log.info("topic %d is gone; not told: %s", binding.topic_id, text)
            except Exception:
                log.exception("topic %d was not told: %s", binding.topic_id, text)
