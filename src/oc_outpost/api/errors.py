"""The API's error type and its one JSON error shape: `{"error": "...", "details": [...]}`."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from oc_outpost.api.models import ErrorResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, details: list[str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=message, details=details or [])
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)
