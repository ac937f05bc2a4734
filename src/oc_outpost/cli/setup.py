"""`oc-outpost setup`: from a bot token to a checked `.env`, one question at a time.

1. the bot token (checked with getMe, never shown again);
2. the group: the user adds the bot to a forum supergroup and sends any message there; the
   chat id and the sender's user id are taken from that message (getUpdates);
3. the group is checked (forum, the bot's rights, privacy mode); each problem is shown with its
   fix and the next message in the group checks again;
4. PROJECT_BASE_PATH (created if missing) and the `opencode` binary;
5. `.env` is written (mode 0600) after every step, so setup can be stopped and run again;
6. `oc-outpost check` runs on the result.

Every answer can be given as an option instead (`--token-file`, `--chat-id`, `--user-id`,
`--project-base`, `--opencode`); with `--non-interactive` nothing is ever asked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import typer

from oc_outpost.cli.check import (
    Finding,
    Level,
    forum_findings,
    make_admin,
    ok,
    privacy_finding,
    rights_findings,
)
from oc_outpost.cli.envfile import read_env, write_env
from oc_outpost.opencode.version import INSTALL_COMMAND, VersionError, judge, opencode_version
from oc_outpost.telegram.probe import (
    BotIdentity,
    BotProbe,
    GroupMessage,
    PollConflict,
    ProbeError,
    TokenRejected,
)

DEFAULT_API_URL = "https://api.telegram.org"
DEFAULT_PROJECT_BASE = "~/projects"
TOKEN_ATTEMPTS = 3


class SetupFailed(Exception):
    """Setup cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class SetupOptions:
    env_file: Path
    token_file: Path | None = None
    chat_id: int | None = None
    user_ids: tuple[int, ...] = ()
    project_base: Path | None = None
    opencode: str | None = None
    api_url: str | None = None
    wait_s: float = 600.0
    interactive: bool = True


@dataclass(frozen=True)
class Group:
    chat_id: int
    user_ids: tuple[int, ...]


def say(text: str = "") -> None:
    typer.echo(text)


class Setup:
    def __init__(self, options: SetupOptions) -> None:
        self._options = options
        self._saved = read_env(options.env_file)
        self._api_url = (
            options.api_url or self._saved.get("TELEGRAM_API_URL") or DEFAULT_API_URL
        ).rstrip("/")

    def run(self) -> None:
        say(f"oc-outpost setup — writing {self._options.env_file}")
        token, me = self._token_step()
        self._save_group(self._group_step(token, me))
        self._save(PROJECT_BASE_PATH=str(self._project_base_step()))
        opencode = self._opencode_step()
        if opencode is not None:
            self._save(OPENCODE_PATH=opencode)
        say(f"\n✅ Wrote {self._options.env_file} (mode 0600; the token is not shown).")

    # --- 1. token --------------------------------------------------------------------------

    def _token_step(self) -> tuple[str, BotIdentity]:
        say("\n1. The bot token")
        for attempt in range(1, TOKEN_ATTEMPTS + 1):
            token = self._ask_token()
            try:
                me = asyncio.run(_identify(token, self._api_url))
            except TokenRejected:
                say(
                    "❌ Telegram rejected this token — fix: copy it again from @BotFather "
                    "(/mybots → your bot → API Token)"
                )
                asked = self._options.interactive and self._options.token_file is None
                if not asked or attempt == TOKEN_ATTEMPTS:
                    raise SetupFailed("no valid bot token") from None
                continue
            except ProbeError as exc:
                raise SetupFailed(f"{exc}; check the network (or --api-url)") from exc
            say(f"✅ Bot @{me.username} (id {me.id})")
            self._save(TELEGRAM_BOT_TOKEN=token)
            if self._api_url != DEFAULT_API_URL:
                self._save(TELEGRAM_API_URL=self._api_url)
            return token, me
        raise AssertionError("unreachable")

    def _ask_token(self) -> str:
        options, saved = self._options, self._saved.get("TELEGRAM_BOT_TOKEN", "")
        if options.token_file is not None:
            token = options.token_file.read_text().strip()
            if not token:
                raise SetupFailed(f"{options.token_file} is empty; put the bot token in it")
            return token
        if not options.interactive:
            if saved:
                return saved
            raise SetupFailed("no bot token: pass --token-file (a file holding the token)")
        hint = " (Enter keeps the one in .env)" if saved else ""
        say("Create a bot with @BotFather (/newbot) and paste its token here.")
        while True:
            token = str(
                typer.prompt(f"Bot token{hint}", default="", show_default=False, hide_input=True)
            ).strip()
            if token or saved:
                return token or saved

    # --- 2. the group ----------------------------------------------------------------------

    def _group_step(self, token: str, me: BotIdentity) -> Group:
        say("\n2. The forum group")
        options = self._options
        if options.chat_id is not None:
            group = Group(options.chat_id, options.user_ids)
        elif self._keep_saved_group():
            saved = self._saved
            users = options.user_ids or _int_list(saved.get("TELEGRAM_ALLOWED_USERS", ""))
            group = Group(int(saved["TELEGRAM_CHAT_ID"]), users)
        else:
            say(_instructions(me))
            group = self._wait_for_group(token)
        return self._check_group(token, me, group)

    def _keep_saved_group(self) -> bool:
        saved = self._saved.get("TELEGRAM_CHAT_ID")
        if saved is None or not saved.lstrip("-").isdigit():
            return False
        if not self._options.interactive:
            return True
        return typer.confirm(f"Use the group {saved} saved in .env?", default=True)

    def _wait_for_group(self, token: str) -> Group:
        message = asyncio.run(_wait_for_sender(token, self._api_url, self._options.wait_s))
        user_ids = self._options.user_ids or (
            (message.user_id,) if message.user_id is not None else ()
        )
        say(
            f"✅ Message from {message.user_name} (user id {message.user_id}) in "
            f"“{message.chat_title}” (chat id {message.chat_id})"
        )
        return Group(message.chat_id, user_ids)

    def _check_group(self, token: str, me: BotIdentity, group: Group) -> Group:
        while True:
            findings, chat_id = asyncio.run(_group_findings(token, self._api_url, group.chat_id))
            group = replace(group, chat_id=chat_id)
            for finding in findings:
                say(finding.line())
            if all(f.ok for f in findings) or not self._options.interactive:
                return group
            self._save_group(group)
            say(
                f"Fix that in Telegram, then send another message in the group (@{me.username} "
                "checks again; Ctrl-C stops, and `oc-outpost setup` continues later)."
            )
            message = asyncio.run(_wait_for_sender(token, self._api_url, self._options.wait_s))
            group = replace(group, chat_id=message.chat_id)  # a group that became a supergroup

    # --- 3. projects and OpenCode ----------------------------------------------------------

    def _project_base_step(self) -> Path:
        say("\n3. Where your projects live (PROJECT_BASE_PATH)")
        options = self._options
        default = self._saved.get("PROJECT_BASE_PATH", DEFAULT_PROJECT_BASE)
        while True:
            if options.project_base is not None:
                answer = str(options.project_base)
            elif options.interactive:
                answer = str(typer.prompt("Project directory", default=default))
            else:
                answer = default
            try:
                return _project_base(Path(answer))
            except SetupFailed as exc:
                if not options.interactive or options.project_base is not None:
                    raise
                say(f"❌ {exc}")

    def _opencode_step(self) -> str | None:
        say("\n4. OpenCode")
        configured = (
            self._options.opencode
            or os.environ.get("OPENCODE_PATH")
            or self._saved.get("OPENCODE_PATH")
            or "opencode"
        )
        binary = shutil.which(os.path.expanduser(configured))
        if binary is None:
            say(
                f"❌ OpenCode ({configured}) was not found — fix: install it with\n"
                f"    {INSTALL_COMMAND}\n"
                "  then run `oc-outpost setup` again (or pass --opencode PATH)."
            )
            return None
        absolute = str(Path(binary).absolute())
        try:
            version = asyncio.run(opencode_version(absolute))
        except (OSError, VersionError) as exc:
            say(f"❌ {absolute} --version failed: {exc} — fix: {INSTALL_COMMAND}")
            return absolute
        verdict = judge(version)
        level = Level.OK if verdict.tested else Level.WARNING
        say(f"{level.value} OpenCode {version} at {absolute}: {verdict.describe()}")
        return absolute  # absolute, so that a service with another PATH finds it too

    def _save_group(self, group: Group) -> None:
        self._save(
            TELEGRAM_CHAT_ID=str(group.chat_id),
            TELEGRAM_ALLOWED_USERS=",".join(str(u) for u in group.user_ids),
        )

    def _save(self, **values: str) -> None:
        write_env(self._options.env_file, values)
        self._saved.update(values)


def _instructions(me: BotIdentity) -> str:
    return (
        "Now, in Telegram:\n"
        "  a. create a group and turn on Topics (group settings → Topics): a forum supergroup;\n"
        f"  b. add @{me.username} to it and make it an administrator with the rights\n"
        "     “Manage topics”, “Delete messages” and “Pin messages”;\n"
        f"  c. send any message in the group as yourself, e.g. /start@{me.username} (a command\n"
        "     reaches the bot even while privacy mode hides plain messages from it).\n"
        "Waiting for that message…"
    )


async def _identify(token: str, api_url: str) -> BotIdentity:
    async with BotProbe(token, api_url) as probe:
        return probe.identity()


async def _wait_for_sender(token: str, api_url: str, wait_s: float) -> GroupMessage:
    """The next message in a group from a person (anonymous admins are told how to fix it)."""

    async def elsewhere(chat_type: str) -> None:
        say(f"(a message in a {chat_type} chat: send it in the group, please)")

    async with BotProbe(token, api_url) as probe:
        while True:
            try:
                message = await probe.next_group_message(wait_s, on_other=elsewhere)
            except PollConflict as exc:
                raise SetupFailed(
                    f"Telegram says: {exc}. Another program takes this bot's updates: stop the "
                    "running bot (or delete the bot's webhook) while setup runs."
                ) from exc
            if message is None:
                raise SetupFailed(
                    f"no message arrived in a group within {wait_s:.0f} s; add the bot to the "
                    "group, send a message there and run `oc-outpost setup` again"
                )
            if not message.anonymous:
                await probe.confirm()
                return message
            say(_anonymous_refusal(message))


def _anonymous_refusal(message: GroupMessage) -> str:
    return (
        f"❌ That message was sent anonymously (as “{message.user_name}”), so it names no user — "
        "fix: turn off Remain anonymous (group settings → Administrators → you → Remain "
        "anonymous), then send another message."
    )


async def _group_findings(token: str, api_url: str, chat_id: int) -> tuple[list[Finding], int]:
    """What is wrong with the group (and its id: a group that became a supergroup moves)."""
    async with BotProbe(token, api_url) as probe:
        me = probe.identity()
        try:
            chat = await probe.chat(chat_id)
        except ProbeError as exc:
            return [Finding(Level.PROBLEM, str(exc), f"add @{me.username} to the group")], chat_id
        moved = [ok(f"The group is now the supergroup {chat.id}")] if chat.migrated_from else []
        findings = [*moved, *forum_findings(replace(chat, migrated_from=None))]
        try:
            rights = await probe.rights(chat.id)
        except ProbeError as exc:
            return [*findings, Finding(Level.PROBLEM, str(exc), make_admin(me))], chat.id
        return [*findings, *rights_findings(rights, me), privacy_finding(me, rights)], chat.id


def _project_base(path: Path) -> Path:
    base = Path(os.path.abspath(path.expanduser()))
    if base.exists() and not base.is_dir():
        raise SetupFailed(f"{base} exists and is not a directory")
    if not base.exists():
        try:
            base.mkdir(parents=True)
        except OSError as exc:
            raise SetupFailed(f"{base} cannot be created: {exc.strerror}") from exc
        say(f"✅ Created {base}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise SetupFailed(f"{base} is not writable by this user")
    say(f"✅ Projects live in {base}")
    return base


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip().lstrip("-").isdigit())
