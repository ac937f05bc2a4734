"""The `oc-outpost` command: `run` (the default) runs the bot."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from oc_outpost.app import serve
from oc_outpost.config import ConfigError, Settings, load_settings

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
    _configure_logging(settings.telegram_bot_token.get_secret_value())
    asyncio.run(_run_until_signalled(settings))


class _Redact(logging.Filter):
    """Masks a secret in every record, whatever library logged it (httpx logs bot API URLs)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._secret in message:
            record.msg, record.args = message.replace(self._secret, "***"), None
        return True


def _configure_logging(secret: str) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redact(secret))


def main() -> None:
    cli()
