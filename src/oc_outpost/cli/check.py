"""`oc-outpost check`: is this installation ready to run? Each problem comes with its fix.

Checks, in order: the configuration (done by the caller), who may drive the bot, the project
base directory, the OpenCode binary and whether its version is in the tested range, then the
Bot API at TELEGRAM_API_URL: getMe (the token, privacy mode), getChat (the chat exists and is a
forum supergroup) and getChatMember for the bot itself (an administrator allowed to manage
topics and delete messages; pinning is recommended).

A warning (⚠) is worth reading but does not stop the bot; a problem (❌) does.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from oc_outpost.app import stt_config
from oc_outpost.config import Settings
from oc_outpost.opencode.version import (
    INSTALL_COMMAND,
    PINNED,
    VersionError,
    judge,
    opencode_version,
)
from oc_outpost.stt import stt_reachable
from oc_outpost.telegram.probe import (
    BotIdentity,
    BotProbe,
    BotRights,
    ChatFacts,
    ProbeError,
    TokenRejected,
    Unreachable,
)

SUPPORTED_OPENCODE = PINNED


class Level(StrEnum):
    OK = "✅"
    WARNING = "⚠️"
    PROBLEM = "❌"


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """Nothing here stops the bot (a warning is ok)."""
        return self.level != Level.PROBLEM

    def line(self) -> str:
        advice = f" — fix: {self.fix}" if self.fix and self.level != Level.OK else ""
        return f"{self.level.value} {self.text}{advice}"


def ok(text: str) -> Finding:
    return Finding(Level.OK, text)


def warning(text: str, fix: str) -> Finding:
    return Finding(Level.WARNING, text, fix)


def problem(text: str, fix: str) -> Finding:
    return Finding(Level.PROBLEM, text, fix)


async def run_checks(settings: Settings) -> list[Finding]:
    findings = [
        ok("Configuration is valid"),
        check_allowed_users(settings.telegram_allowed_users),
        check_project_base(settings.project_base_path),
    ]
    findings.extend(await check_opencode(settings.opencode_path))
    findings.append(await check_stt(settings))
    findings.extend(await check_telegram(settings))
    return findings


async def check_stt(settings: Settings) -> Finding:
    """Voice notes: off without STT_URL (fine), else the service must answer with the key."""
    config = stt_config(settings)
    if config is None:
        return ok("Voice notes are off (set STT_URL to transcribe them)")
    probe = await stt_reachable(config)
    if probe.ok:
        return ok(f"Voice notes are transcribed by {config.base} ({probe.detail})")
    return problem(
        f"STT_URL does not answer as a transcription service: {probe.detail}",
        "check STT_URL (the …/v1 base of an OpenAI-compatible API) and STT_API_KEY",
    )


def check_allowed_users(users: tuple[int, ...]) -> Finding:
    if not users:
        return warning(
            "TELEGRAM_ALLOWED_USERS is empty: everybody in the chat can drive the bot",
            "set TELEGRAM_ALLOWED_USERS to your Telegram user id (comma-separate several)",
        )
    return ok(f"Only {len(users)} allowed user{'s' if len(users) != 1 else ''} can drive the bot")


def check_project_base(base: Path) -> Finding:
    if not base.exists():
        return ok(f"PROJECT_BASE_PATH {base} does not exist yet; /new creates it")
    if not base.is_dir():
        return problem(
            f"PROJECT_BASE_PATH {base} is not a directory",
            "point PROJECT_BASE_PATH at the directory that holds your projects",
        )
    if not os.access(base, os.W_OK | os.X_OK):
        return problem(
            f"PROJECT_BASE_PATH {base} is not writable by this user",
            f"give this user write access to {base} (or choose another directory)",
        )
    return ok(f"Projects live in {base}")


async def check_opencode(command: str) -> list[Finding]:
    binary = shutil.which(command)
    install = f"install it with `{INSTALL_COMMAND}`"
    if binary is None:
        return [
            problem(
                f"OpenCode binary {command!r} was not found",
                f"{install}, or set OPENCODE_PATH to its full path",
            )
        ]
    try:
        version = await opencode_version(binary)
    except (OSError, VersionError) as exc:
        return [problem(f"{binary} --version failed: {exc}", f"{install} and try again")]
    verdict = judge(version)
    found = ok(f"OpenCode {version} at {binary}")
    if not verdict.tested:
        return [found, warning(verdict.describe(), f"for the version CI runs, {install}")]
    return [found, ok(verdict.describe())]


async def check_telegram(settings: Settings) -> list[Finding]:
    try:
        async with BotProbe(
            settings.telegram_bot_token.get_secret_value(), settings.telegram_api_url
        ) as probe:
            me = probe.identity()
            findings = [ok(f"Bot @{me.username} (id {me.id})")]
            try:
                chat = await probe.chat(settings.telegram_chat_id)
            except ProbeError as exc:
                return [*findings, chat_problem(exc, me)]
            findings.extend(forum_findings(chat))
            try:
                rights = await probe.rights(chat.id)
            except ProbeError as exc:
                return [*findings, problem(str(exc), make_admin(me))]
            findings.extend(rights_findings(rights, me))
            findings.append(privacy_finding(me, rights))
            return findings
    except TokenRejected:
        return [
            problem(
                "Telegram rejected TELEGRAM_BOT_TOKEN",
                "copy the token of your bot from @BotFather into TELEGRAM_BOT_TOKEN",
            )
        ]
    except Unreachable as exc:
        return [
            problem(
                str(exc),
                "check the network, or TELEGRAM_API_URL if you use your own Bot API server",
            )
        ]


def chat_problem(exc: ProbeError, me: BotIdentity) -> Finding:
    return problem(
        str(exc),
        f"add @{me.username} to your forum group and set TELEGRAM_CHAT_ID to the group's id "
        "(it starts with -100; `oc-outpost setup` finds it for you)",
    )


def forum_findings(chat: ChatFacts) -> list[Finding]:
    findings = []
    if chat.migrated_from is not None:
        findings.append(
            problem(
                f"the group {chat.migrated_from} became the supergroup {chat.id}",
                f"set TELEGRAM_CHAT_ID={chat.id}",
            )
        )
    if not chat.is_forum_supergroup:
        findings.append(
            problem(
                f"chat {chat.id} ({chat.title}) is not a forum",
                "in the group's settings turn on Topics (Edit → Topics); that also makes it a "
                "supergroup",
            )
        )
    else:
        findings.append(ok(f"Chat “{chat.title}” is a forum supergroup"))
    return findings


def make_admin(me: BotIdentity) -> str:
    return (
        f"make @{me.username} an administrator of the group with the rights “Manage topics”, "
        "“Delete messages” and “Pin messages”"
    )


def rights_findings(rights: BotRights, me: BotIdentity) -> list[Finding]:
    if not rights.is_admin:
        return [
            problem(
                f"the bot is not an administrator of the chat (it is “{rights.status}”)",
                make_admin(me),
            )
        ]
    if rights.status == "creator":
        return [ok("The bot owns the chat")]
    grant = f"in the group's settings (Administrators → @{me.username}) turn on"
    findings = []
    if rights.manage_topics:
        findings.append(ok("The bot is an administrator that may manage topics"))
    else:
        findings.append(
            problem(
                "the bot is an administrator but may not manage topics",
                f"give @{me.username} the “Manage topics” right: {grant} “Manage topics”",
            )
        )
    if not rights.delete_messages:
        findings.append(
            problem(
                "the bot may not delete messages (needed to roll back a failed /new and to "
                "tidy its service messages)",
                f"{grant} “Delete messages”",
            )
        )
    if not rights.pin_messages:
        findings.append(
            warning(
                "the bot may not pin messages (the live board in General is not pinned)",
                f"{grant} “Pin messages”",
            )
        )
    return findings


def privacy_finding(me: BotIdentity, rights: BotRights) -> Finding:
    if me.reads_all_group_messages:
        return ok("Privacy mode is off: the bot sees every message in the group")
    fix = (
        "in @BotFather send /setprivacy, choose the bot, then Disable; remove the bot from the "
        "group and add it again (and make it administrator again) for that to take effect"
    )
    if rights.is_admin:
        return warning(
            "privacy mode is on: the bot sees plain messages only while it is an administrator",
            fix,
        )
    return problem("privacy mode is on: the bot sees only commands, not your prompts", fix)
