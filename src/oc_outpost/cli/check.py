"""`oc-outpost check`: is this installation ready to run? Each problem comes with its fix.

Checks, in order: the configuration (done by the caller), the project base directory, the
OpenCode binary and its version, then the Bot API at TELEGRAM_API_URL: getMe (the token),
getChat (the chat exists and is a forum supergroup) and getChatMember for the bot itself
(an administrator allowed to manage topics).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from telegram import Bot, ChatMemberAdministrator, ChatMemberOwner
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, TelegramError
from telegram.request import HTTPXRequest

from oc_outpost.config import Settings

SUPPORTED_OPENCODE = "1.18.33"
VERSION_TIMEOUT_S = 30.0
BOT_API_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Finding:
    ok: bool
    text: str
    fix: str = ""

    def line(self) -> str:
        if self.ok:
            return f"✅ {self.text}"
        return f"❌ {self.text} — fix: {self.fix}" if self.fix else f"❌ {self.text}"


def ok(text: str) -> Finding:
    return Finding(True, text)


def problem(text: str, fix: str) -> Finding:
    return Finding(False, text, fix)


async def run_checks(settings: Settings) -> list[Finding]:
    findings = [ok("Configuration is valid"), check_project_base(settings.project_base_path)]
    findings.extend(await check_opencode(settings.opencode_path))
    findings.extend(await check_telegram(settings))
    return findings


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
    install = f"install it with `npm install -g opencode-ai@{SUPPORTED_OPENCODE}`"
    if binary is None:
        return [
            problem(
                f"OpenCode binary {command!r} was not found",
                f"{install}, or set OPENCODE_PATH to its full path",
            )
        ]
    try:
        version = await opencode_version(binary)
    except (OSError, TimeoutError, RuntimeError) as exc:
        return [problem(f"{binary} --version failed: {exc}", f"{install} and try again")]
    found = ok(f"OpenCode {version} at {binary}")
    if version != SUPPORTED_OPENCODE:
        return [
            found,
            problem(
                f"OpenCode {version} is not the tested version {SUPPORTED_OPENCODE}",
                install,
            ),
        ]
    return [found]


async def opencode_version(binary: str) -> str:
    process = await asyncio.create_subprocess_exec(
        binary,
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), VERSION_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise TimeoutError(f"no answer within {VERSION_TIMEOUT_S:.0f} s") from None
    if process.returncode != 0:
        detail = (err or out).decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"exit code {process.returncode}: {detail[-1] if detail else ''}")
    words = out.decode(errors="replace").split()
    return words[-1] if words else "unknown"


def _bot(settings: Settings) -> Bot:
    api = settings.telegram_api_url
    request = HTTPXRequest(
        connect_timeout=BOT_API_TIMEOUT_S,
        read_timeout=BOT_API_TIMEOUT_S,
        write_timeout=BOT_API_TIMEOUT_S,
        pool_timeout=BOT_API_TIMEOUT_S,
    )
    return Bot(
        settings.telegram_bot_token.get_secret_value(),
        base_url=f"{api}/bot",
        base_file_url=f"{api}/file/bot",
        request=request,
        get_updates_request=request,
    )


async def check_telegram(settings: Settings) -> list[Finding]:
    bot = _bot(settings)
    try:
        await bot.initialize()  # getMe
    except InvalidToken:
        return [
            problem(
                "Telegram rejected TELEGRAM_BOT_TOKEN",
                "copy the token of your bot from @BotFather into TELEGRAM_BOT_TOKEN",
            )
        ]
    except NetworkError as exc:
        return [
            problem(
                f"the Bot API at {settings.telegram_api_url} is not reachable ({exc.message})",
                "check the network, or TELEGRAM_API_URL if you use your own Bot API server",
            )
        ]
    try:
        return [ok(f"Bot @{bot.username} (id {bot.id})"), *await _check_chat(bot, settings)]
    finally:
        await bot.shutdown()


async def _check_chat(bot: Bot, settings: Settings) -> list[Finding]:
    chat_id = settings.telegram_chat_id
    try:
        chat = await bot.get_chat(chat_id)
    except (BadRequest, Forbidden) as exc:
        return [
            problem(
                f"chat {chat_id} cannot be read ({exc.message})",
                f"add @{bot.username} to your forum group and set TELEGRAM_CHAT_ID to the "
                "group's id (it starts with -100)",
            )
        ]
    except TelegramError as exc:
        return [problem(f"getChat failed: {exc.message}", "check TELEGRAM_CHAT_ID and retry")]
    findings = []
    if chat.type != ChatType.SUPERGROUP or not chat.is_forum:
        findings.append(
            problem(
                f"chat {chat_id} ({chat.title or chat.type}) is not a forum",
                "in the group's settings turn on Topics (Edit → Topics); that also makes it a "
                "supergroup",
            )
        )
    else:
        findings.append(ok(f"Chat “{chat.title}” is a forum supergroup"))
    findings.append(await _check_rights(bot, chat_id))
    return findings


async def _check_rights(bot: Bot, chat_id: int) -> Finding:
    make_admin = (
        f"make @{bot.username} an administrator of the group with the “Manage topics” right"
    )
    try:
        member = await bot.get_chat_member(chat_id, bot.id)
    except TelegramError as exc:
        return problem(
            f"the bot's rights in chat {chat_id} cannot be read: {exc.message}", make_admin
        )
    if isinstance(member, ChatMemberOwner):
        return ok("The bot owns the chat")
    if not isinstance(member, ChatMemberAdministrator):
        status = ChatMemberStatus(member.status).value if member.status else "unknown"
        return problem(
            f"the bot is not an administrator of the chat (it is “{status}”)", make_admin
        )
    if not member.can_manage_topics:
        return problem(
            "the bot is an administrator but may not manage topics",
            f"give @{bot.username} the “Manage topics” right in the group's administrators",
        )
    return ok("The bot is an administrator that may manage topics")
