"""The HTTP API for external OpenCode servers (SPEC §6), served by uvicorn in the bot's loop.

Every route, the OpenAPI document and the docs pages need `Authorization: Bearer <key>`
(compared in constant time); there is always a key. Requests must name a loopback host or
API_HOST and carry at most 64 KB (guard.py). A server URL to register must be on loopback unless
its host is in API_ALLOWED_SERVER_HOSTS. Errors are JSON `{"error": "...", "details": [...]}`
with a 4xx status for bad input; nothing ever answers with a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from oc_outpost import __version__
from oc_outpost import metrics as prometheus
from oc_outpost.api.errors import ApiError, error_response
from oc_outpost.api.guard import RequestGuard
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
from oc_outpost.config import is_loopback_host
from oc_outpost.core.controller import Controller
from oc_outpost.core.errors import BadRequest, Conflict, NotFound, Unavailable, UserError
from oc_outpost.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 421, 422)
}
_TITLE: Final = "oc-outpost API"
# What each kind of user-facing failure means in HTTP. Unavailable is 422 (not 5xx): the
# request names a server that does not answer, which the caller can fix.
STATUS_OF: dict[type[UserError], int] = {
    BadRequest: 422,
    NotFound: 404,
    Conflict: 409,
    Unavailable: 422,
}


def status_of(error: UserError) -> int:
    return next((code for kind, code in STATUS_OF.items() if isinstance(error, kind)), 422)


# Module level: FastAPI resolves the (postponed) annotations of dependencies in module globals.
_bearer = HTTPBearer(auto_error=False, description="API_KEY, or the generated key in api-key")


class ApiStartError(RuntimeError):
    """The API server could not start listening."""


@dataclass(frozen=True)
class ApiConfig:
    api_key: str
    api_host: str = "127.0.0.1"
    # Hosts besides loopback whose servers may be registered by URL (API_ALLOWED_SERVER_HOSTS).
    allowed_server_hosts: frozenset[str] = field(default_factory=frozenset)
    max_body_bytes: int = MAX_BODY_BYTES


def build_api(controller: Controller, config: ApiConfig, metrics: Metrics | None = None) -> FastAPI:
    if not config.api_key:
        raise ValueError("the API needs a key")
    api_key = config.api_key.encode()

    async def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), api_key):
            raise ApiError(401, "Missing or wrong API key (Authorization: Bearer <API_KEY>).")

    app = FastAPI(
        title=_TITLE,
        version=__version__,
        description="Register external OpenCode servers and send their sessions to Telegram.",
        dependencies=[Depends(authorised)],
        responses=_ERRORS,
        # Served by install_docs() as ordinary routes, so that they need the key too.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(RequestGuard, api_host=config.api_host, max_body_bytes=config.max_body_bytes)
    install_error_handlers(app)
    install_docs(app)

    @app.get("/api/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        return HealthResponse(status="ok", version=__version__)

    @app.post("/api/register", response_model=RegistrationResponse, status_code=201)
    async def register(body: RegisterRequest) -> JSONResponse:
        password = body.password.get_secret_value() if body.password else None
        url = body.server_url()
        refusal = server_url_refusal(url, config.allowed_server_hosts)
        if refusal is not None:
            raise ApiError(422, refusal)
        result = await controller.register(body.project_path, url, body.session_id, password)
        response = RegistrationResponse.from_registration(result)
        return JSONResponse(response.model_dump(), status_code=201 if result.created else 200)

    @app.post("/api/unregister", response_model=UnregisterResponse)
    async def unregister(body: ProjectRequest) -> UnregisterResponse:
        topics = await controller.unregister(body.project_path)
        return UnregisterResponse(project_path=body.project_path, topic_ids=topics)

    @app.get("/api/status/{project_path:path}", response_model=StatusResponse)
    async def status(project_path: str) -> StatusResponse:
        bindings, found = await controller.registration_status(project_path)
        return StatusResponse.build(project_path, bindings, found)

    @app.get("/api/instances", response_model=list[InstanceResponse])
    async def list_instances() -> list[InstanceResponse]:
        return [InstanceResponse.from_info(i) for i in await controller.instances()]

    counted = metrics or Metrics()

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {prometheus.CONTENT_TYPE: {}}}},
        summary="Prometheus metrics",
    )
    async def metrics_text() -> Response:
        return Response(await counted.render(), media_type=prometheus.CONTENT_TYPE)

    return app


def server_url_refusal(url: str, allowed_hosts: frozenset[str]) -> str | None:
    """Why a server URL may not be registered, or None. An OpenCode server's API runs any
    command its agent is asked to, so the bot only drives servers on this machine unless told
    otherwise; credentials belong in `password`, not in a URL that may end up in a log."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
        return f"url: not a valid URL ({exc})."
    try:
        parts.port  # noqa: B018 (validates it)
    except ValueError:
        return "url: the port is not a number between 0 and 65535."
    if parts.username is not None or parts.password is not None:
        return "url: must not contain credentials; pass the server's password as `password`."
    host = _normalised_host(parts.hostname or "")
    if is_loopback_host(host) or host in allowed_hosts:
        return None
    return (
        f"url: host {host!r} is not allowed; a registered server must be on loopback "
        "(127.0.0.1, localhost, ::1) unless its host is listed in API_ALLOWED_SERVER_HOSTS."
    )


def _normalised_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def install_docs(app: FastAPI) -> None:
    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{_TITLE} docs")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{_TITLE} docs")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        return error_response(status_of(exc), str(exc))

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
        # log_config=None: uvicorn's records go to the root handlers, which mask secrets.
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            log_config=None,
            lifespan="off",
            date_header=False,
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
