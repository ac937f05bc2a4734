"""`oc-outpost link`: send the OpenCode session in front of you to a Telegram topic.

Run it in a project directory while the OpenCode TUI (or `opencode serve`) runs there: it finds
that server, picks its most recently updated session (or `--session`), and registers it with the
running bot through its HTTP API, which binds a topic and streams the session there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from oc_outpost.api_key import ApiKeyError, api_key_file, resolve_api_key
from oc_outpost.opencode.client import OpenCodeClient
from oc_outpost.opencode.errors import OpenCodeAuthError, OpenCodeError
from oc_outpost.servers.discovery import scan_processes

DEFAULT_ORCHESTRATOR_DB = "./data/orchestrator.db"  # the bot's default, relative to its directory
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})
API_TIMEOUT_S = 30.0  # registering starts a stream and creates a topic
PROBE_TIMEOUT_S = 2.0


class LinkError(Exception):
    """Why the session could not be sent; printed as is."""


@dataclass(frozen=True)
class Target:
    url: str
    session_id: str | None


@dataclass(frozen=True)
class LinkOptions:
    project: Path
    session_id: str | None
    port: int | None
    password: str | None
    api_url: str
    api_key: str


def default_api_url() -> str:
    host = (os.environ.get("API_HOST") or "127.0.0.1").strip("[]")
    if host in WILDCARD_HOSTS:  # listening everywhere: reach it on loopback
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{os.environ.get('API_PORT', '4200')}"


def api_key_from(environ: Mapping[str, str]) -> str:
    """API_KEY, else the key the bot generated beside ORCHESTRATOR_DB_PATH."""
    db_path = Path(environ.get("ORCHESTRATOR_DB_PATH") or DEFAULT_ORCHESTRATOR_DB).expanduser()
    try:
        return resolve_api_key(environ.get("API_KEY"), api_key_file(db_path), create=False)
    except ApiKeyError as exc:
        raise LinkError(f"{exc}. Or set API_KEY to the bot's key.") from exc


async def link(options: LinkOptions) -> dict[str, object]:
    target = await find_target(options)
    return await register(options, target)


async def find_target(options: LinkOptions) -> Target:
    if options.port is not None:
        urls = [f"http://127.0.0.1:{options.port}"]
    else:
        urls = await asyncio.to_thread(servers_in, options.project)
    failures = []
    for url in urls:
        try:
            return await _probe(url, options)
        except OpenCodeError as exc:
            failures.append(f"{url}: {exc}")
    detail = ("\n  " + "\n  ".join(failures)) if failures else ""
    raise LinkError(
        f"No OpenCode server answers for {options.project}. Start `opencode` there first "
        f"(or pass --port).{detail}"
    )


def servers_in(project: Path) -> list[str]:
    """URLs of the OpenCode processes (other than us) whose working directory is ``project``."""
    return [
        f"http://{host}:{port}"
        for candidate in scan_processes(frozenset({os.getpid()}))
        if candidate.cwd and Path(candidate.cwd).resolve() == project
        for host, port in candidate.endpoints
    ]


async def _probe(url: str, options: LinkOptions) -> Target:
    async with OpenCodeClient(
        url, password=options.password, timeout=PROBE_TIMEOUT_S, directory=str(options.project)
    ) as client:
        try:
            await client.health()
        except OpenCodeAuthError as exc:
            raise LinkError(
                f"The OpenCode server at {url} needs its password: pass --password "
                "or set OPENCODE_SERVER_PASSWORD."
            ) from exc
        if options.session_id is not None:
            return Target(url, options.session_id)
        sessions = [s for s in await client.list_sessions() if s.parent_id is None]
    latest = max(sessions, key=lambda s: s.time.updated or s.time.created, default=None)
    return Target(url, latest.id if latest else None)


async def register(options: LinkOptions, target: Target) -> dict[str, object]:
    body = {"project_path": str(options.project), "url": target.url}
    if target.session_id:
        body["session_id"] = target.session_id
    if options.password:
        body["password"] = options.password
    headers = {"Authorization": f"Bearer {options.api_key}"}
    try:
        async with httpx.AsyncClient(timeout=API_TIMEOUT_S) as http:
            response = await http.post(
                f"{options.api_url.rstrip('/')}/api/register", json=body, headers=headers
            )
    except httpx.HTTPError as exc:
        raise LinkError(
            f"The oc-outpost API at {options.api_url} is not reachable ({exc.__class__.__name__})."
            " Is the bot running? Set API_PORT/API_HOST or pass --api-url."
        ) from exc
    payload = _json(response)
    if response.status_code >= 400:
        raise LinkError(f"The bot refused ({response.status_code}): {payload.get('error')}")
    return payload


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        payload = response.json()
    except ValueError:
        return {"error": response.text[:200]}
    return payload if isinstance(payload, dict) else {"error": str(payload)[:200]}
