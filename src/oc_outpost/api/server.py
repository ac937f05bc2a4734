"""The HTTP API for external OpenCode servers (SPEC §6), served by uvicorn in the bot's loop.

Every route needs `Authorization: Bearer <API_KEY>` when a key is set (compared in constant
time). Errors are JSON `{"error": "...", "details": [...]}` with a 4xx status for bad input;
nothing ever answers with a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from oc_outpost import __version__
from oc_outpost.api.models import (
    ErrorResponse,
    HealthResponse,
    InstanceResponse,
    ProjectRequest,
    RegisterRequest,
    RegistrationResponse,
    StatusResponse,
    UnregisterResponse,
)
from oc_outpost.core.external import ExternalServers, RegistrationError

log = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 422)
}


# Module level: FastAPI resolves the (postponed) annotations of dependencies in module globals.
_bearer = HTTPBearer(auto_error=False, description="API_KEY, when one is configured")


class ApiStartError(RuntimeError):
    """The API server could not start listening."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, details: list[str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=message, details=details or [])
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def build_api(externals: ExternalServers, api_key: str | None) -> FastAPI:
    async def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if api_key is None:
            return
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "Missing or wrong API key (Authorization: Bearer <API_KEY>).")

    app = FastAPI(
        title="oc-outpost API",
        version=__version__,
        description="Register external OpenCode servers and send their sessions to Telegram.",
        dependencies=[Depends(authorised)],
        responses=_ERRORS,
    )
    install_error_handlers(app)

    @app.get("/api/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        return HealthResponse(status="ok", version=__version__)

    @app.post("/api/register", response_model=RegistrationResponse, status_code=201)
    async def register(body: RegisterRequest) -> JSONResponse:
        password = body.password.get_secret_value() if body.password else None
        try:
            result = await externals.register(
                body.project_path, body.server_url(), body.session_id, password
            )
        except RegistrationError as exc:
            raise ApiError(exc.status, str(exc)) from exc
        response = RegistrationResponse.from_registration(result)
        return JSONResponse(response.model_dump(), status_code=201 if result.created else 200)

    @app.post("/api/unregister", response_model=UnregisterResponse)
    async def unregister(body: ProjectRequest) -> UnregisterResponse:
        try:
            topics = await externals.unregister(body.project_path)
        except RegistrationError as exc:
            raise ApiError(exc.status, str(exc)) from exc
        return UnregisterResponse(project_path=body.project_path, topic_ids=topics)

    @app.get("/api/status/{project_path:path}", response_model=StatusResponse)
    async def status(project_path: str) -> StatusResponse:
        try:
            bindings, found = await externals.status(project_path)
        except RegistrationError as exc:
            raise ApiError(exc.status, str(exc)) from exc
        return StatusResponse.build(project_path, bindings, found)

    @app.get("/api/instances", response_model=list[InstanceResponse])
    async def list_instances() -> list[InstanceResponse]:
        return [InstanceResponse.from_info(i) for i in await externals.all_instances()]

    return app


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on 405
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "The request body is not valid JSON.")
        details = [_describe(e) for e in errors]
        return error_response(422, "The request is not valid.", details)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("API request failed", exc_info=exc)
        return error_response(500, "Internal error; the bot's log has the details.")


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
    message = str(error.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


class _QuietServer(uvicorn.Server):
    """uvicorn whose main loop sleeps until it is asked to stop. uvicorn's own wakes up ten
    times a second (to look for a shutdown and refresh the Date header, which is off here),
    ten wake-ups a second for nothing in a bot that waits."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    async def main_loop(self) -> None:
        if not await self.on_tick(0):  # sets the default headers
            await self._stop.wait()

    def request_stop(self) -> None:
        self.should_exit = True
        self._stop.set()


class ApiServer:
    """uvicorn inside the bot's own event loop, started and stopped by the composition root."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", date_header=False
        )
        self._server = _QuietServer(config)
        self._where = f"{host}:{port}"
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        self._task = asyncio.create_task(self._serve(), name="api")
        async with asyncio.timeout(timeout_s):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise ApiStartError(f"the API server stopped during start-up on {self._where}")
                await asyncio.sleep(0.02)

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exc:  # uvicorn exits the process when it cannot bind
            raise ApiStartError(
                f"the API cannot listen on {self._where} (port in use?); set API_HOST/API_PORT"
            ) from exc

    async def stop(self) -> None:
        if self._task is None or self._task.done():  # a failed start already raised its error
            self._task = None
            return
        self._server.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, 10.0)
        self._task = None
