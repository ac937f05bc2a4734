"""The `oc-outpost` command: `run` (the default) runs the bot; `check` checks the setup."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from oc_outpost.api_key import ApiKeyError
from oc_outpost.app import serve
from oc_outpost.cli.check import run_checks
from oc_outpost.cli.link import LinkError, LinkOptions, api_key_from, default_api_url, link
from oc_outpost.config import ConfigError, Settings, load_settings
from oc_outpost.logs import redact_logging
from oc_outpost.telegram.startup import StartupFailed, TokenRefused

log = logging.getLogger("oc_outpost")

cli = typer.Typer(
    help="A Telegram forum supergroup as a control room for OpenCode coding agents.",
    no_args_is_help=False,
    add_completion=False,
)


def _load() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"oc-outpost: configuration is not valid:\n{exc}", err=True)
        typer.echo("See .env.example for every variable.", err=True)
        raise typer.Exit(2) from None


async def _run_until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


@cli.callback(invoke_without_command=True)
def default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        run()


@cli.command()
def run() -> None:
    """Run the bot (long polling) until SIGINT or SIGTERM."""
    settings = _load()
    _configure_logging(settings)
    try:
        asyncio.run(_run_until_signalled(settings))
    except StartupFailed as exc:
        typer.echo(f"oc-outpost: could not start: {exc}", err=True)
        raise typer.Exit(2 if isinstance(exc, TokenRefused) else 1) from None
    except ApiKeyError as exc:
        typer.echo(f"oc-outpost: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception:
        # Logged, not left to the interpreter: its traceback printer does not mask secrets.
        log.exception("oc-outpost stopped on an unexpected error")
        raise typer.Exit(1) from None


@cli.command()
def check() -> None:
    """Check the configuration, OpenCode and the Telegram chat; print each problem with its fix."""
    typer.echo("oc-outpost check")
    try:
        settings = load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"❌ {problem} — fix: set it in .env or the environment (see .env.example)")
        raise typer.Exit(1) from None
    findings = asyncio.run(run_checks(settings))
    for finding in findings:
        typer.echo(finding.line())
    problems = sum(1 for f in findings if not f.ok)
    if problems:
        typer.echo(f"{problems} problem{'s' if problems != 1 else ''} to fix.")
        raise typer.Exit(1)
    typer.echo("All good: start the bot with `oc-outpost`.")


@cli.command("link")
def link_command(
    session: Annotated[
        str | None, typer.Option(help="Session id (default: the most recently updated)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port of the OpenCode server (default: find it)")
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="Project directory (default: the current one)")
    ] = Path("."),
    api_url: Annotated[
        str | None, typer.Option(help="oc-outpost API (default: from API_HOST/API_PORT)")
    ] = None,
) -> None:
    """Send the OpenCode session running in this directory to a Telegram topic."""
    try:
        options = LinkOptions(
            project=directory.resolve(),
            session_id=session,
            port=port,
            password=os.environ.get("OPENCODE_SERVER_PASSWORD") or None,
            api_url=api_url or default_api_url(),
            api_key=api_key_from(os.environ),
        )
        result = asyncio.run(link(options))
    except LinkError as exc:
        typer.echo(f"oc-outpost link: {exc}", err=True)
        raise typer.Exit(1) from None
    verb = "Sent" if result.get("created") else "Already sent"
    typer.echo(
        f"{verb} session {result.get('session_id')} of {result.get('project_path')} "
        f"to Telegram topic {result.get('topic_id')}."
    )


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    redact_logging(settings.telegram_bot_token, settings.api_key)


def main() -> None:
    cli()
