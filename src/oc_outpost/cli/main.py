"""The `oc-outpost` command: `run` (the default) runs the bot; `setup`, `check`, `service` and
`link` help to get it there."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from oc_outpost import __version__
from oc_outpost.api_key import ApiKeyError
from oc_outpost.app import serve
from oc_outpost.cli import service as units
from oc_outpost.cli.check import Level, run_checks
from oc_outpost.cli.link import LinkError, LinkOptions, api_key_from, default_api_url, link
from oc_outpost.cli.logs import configure_logging
from oc_outpost.cli.setup import Setup, SetupFailed, SetupOptions
from oc_outpost.config import DEFAULT_ENV_FILE, ConfigError, Settings, load_settings
from oc_outpost.logs import redact_logging
from oc_outpost.telegram.probe import ProbeError
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


service_cli = typer.Typer(help="Run the bot as a systemd user service.", add_completion=False)
cli.add_typer(service_cli, name="service")

EnvFileOption = Annotated[Path, typer.Option("--env-file", help="The .env file", dir_okay=False)]


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"oc-outpost {__version__}")
        raise typer.Exit()


@cli.callback(invoke_without_command=True)
def default(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    if ctx.invoked_subcommand is None:
        run()


@cli.command()
def run() -> None:
    """Run the bot (long polling) until SIGINT or SIGTERM."""
    settings = _load()
    configure_logging(settings.log_format, settings.log_level)
    redact_logging(settings.telegram_bot_token, settings.api_key)
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
def check(env_file: EnvFileOption = DEFAULT_ENV_FILE) -> None:
    """Check the configuration, OpenCode and the Telegram chat; print each problem with its fix."""
    typer.echo("oc-outpost check")
    raise typer.Exit(run_check(env_file))


def run_check(env_file: Path) -> int:
    """Print every finding; the exit code: 1 if anything stops the bot, else 0."""
    try:
        settings = load_settings(env_file=env_file if env_file.is_file() else None)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"❌ {problem} — fix: set it in .env or the environment (see .env.example)")
        return 1
    findings = asyncio.run(run_checks(settings))
    for finding in findings:
        typer.echo(finding.line())
    problems = sum(1 for f in findings if not f.ok)
    warnings = sum(1 for f in findings if f.level == Level.WARNING)
    if problems:
        typer.echo(f"{problems} problem{'s' if problems != 1 else ''} to fix.")
        return 1
    noted = f" ({warnings} warning{'s' if warnings != 1 else ''} above)" if warnings else ""
    typer.echo(f"All good{noted}: start the bot with `oc-outpost`.")
    return 0


@cli.command()
def setup(
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    token_file: Annotated[
        Path | None,
        typer.Option(help="Read the bot token from this file (it is never echoed)", dir_okay=False),
    ] = None,
    chat_id: Annotated[
        int | None, typer.Option(help="The forum group's id (skips waiting for a message)")
    ] = None,
    user_id: Annotated[
        list[int] | None,
        typer.Option(help="A Telegram user id allowed to drive the bot (repeatable)"),
    ] = None,
    project_base: Annotated[
        Path | None, typer.Option(help="PROJECT_BASE_PATH (created if missing)")
    ] = None,
    opencode: Annotated[
        str | None, typer.Option(help="The opencode binary (default: OPENCODE_PATH or PATH)")
    ] = None,
    api_url: Annotated[
        str | None, typer.Option(help="Bot API server (default https://api.telegram.org)")
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the message in the group")
    ] = 600.0,
    non_interactive: Annotated[
        bool, typer.Option("--non-interactive", help="Never ask; a missing answer is an error")
    ] = False,
) -> None:
    """From a bot token to a checked .env: asks, checks and explains each step."""
    options = SetupOptions(
        env_file=Path(os.path.abspath(env_file)),
        token_file=token_file,
        chat_id=chat_id,
        user_ids=tuple(user_id or ()),
        project_base=project_base,
        opencode=opencode,
        api_url=api_url,
        wait_s=wait,
        interactive=not non_interactive,
    )
    try:
        Setup(options).run()
    except (SetupFailed, ProbeError) as exc:
        typer.echo(f"❌ {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("\n5. The whole check")
    code = run_check(options.env_file)
    if code == 0:
        typer.echo("Run it as a service: `oc-outpost service install`.")
    raise typer.Exit(code)


UnitDirOption = Annotated[
    Path | None,
    typer.Option(help="Where the unit goes (default: $XDG_CONFIG_HOME/systemd/user)"),
]


@service_cli.command("install")
def service_install(
    env_file: EnvFileOption = DEFAULT_ENV_FILE,
    unit_dir: UnitDirOption = None,
    executable: Annotated[
        Path | None, typer.Option("--exec", help="The oc-outpost executable (default: this one)")
    ] = None,
) -> None:
    """Write the systemd user unit oc-outpost.service (runs in the directory of the .env)."""
    env_path = Path(os.path.abspath(env_file))
    try:
        spec = units.UnitSpec(
            executable=Path(os.path.abspath(executable))
            if executable
            else units.default_executable(),
            working_directory=env_path.parent,
            env_file=env_path,
        )
        unit = units.install(spec, unit_dir or units.default_unit_dir())
    except units.ServiceError as exc:
        typer.echo(f"❌ {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(units.install_advice(unit))


@service_cli.command("uninstall")
def service_uninstall(unit_dir: UnitDirOption = None) -> None:
    """Remove the systemd user unit written by `service install`."""
    try:
        removed = units.uninstall(unit_dir or units.default_unit_dir())
    except units.ServiceError as exc:
        typer.echo(f"❌ {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(units.uninstall_advice(removed))


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


def main() -> None:
    cli()
