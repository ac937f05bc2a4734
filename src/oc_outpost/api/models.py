"""Request and response bodies of the HTTP API; snake_case and camelCase are both accepted."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.alias_generators import to_camel

from oc_outpost.core.registration import Registration
from oc_outpost.model import InstanceInfo, TopicBinding


class _Request(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid"
    )


class ProjectRequest(_Request):
    project_path: str = Field(
        min_length=1, max_length=4096, description="Project directory inside PROJECT_BASE_PATH"
    )


class RegisterRequest(ProjectRequest):
    port: int | None = Field(None, ge=1, le=65535, description="Port on 127.0.0.1")
    url: str | None = Field(
        None, max_length=2048, pattern=r"^https?://[^\s/]+(/\S*)?$", description="Server URL"
    )
    session_id: str | None = Field(
        None, pattern=r"^ses_[A-Za-z0-9]{1,64}$", description="Session to bind; new if absent"
    )
    password: SecretStr | None = Field(
        None, max_length=1024, description="OPENCODE_SERVER_PASSWORD of that server"
    )

    @model_validator(mode="after")
    def _one_address(self) -> Self:
        if (self.port is None) == (self.url is None):
            raise ValueError("give exactly one of port or url")
        return self

    def server_url(self) -> str:
        return self.url.rstrip("/") if self.url else f"http://127.0.0.1:{self.port}"


class ErrorResponse(BaseModel):
    error: str
    details: list[str] = []


class HealthResponse(BaseModel):
    status: str
    version: str


class RegistrationResponse(BaseModel):
    project_path: str
    topic_id: int
    session_id: str
    instance_id: str
    url: str
    created: bool

    @classmethod
    def from_registration(cls, r: Registration) -> RegistrationResponse:
        return cls(
            project_path=r.project_path,
            topic_id=r.topic_id,
            session_id=r.session_id,
            instance_id=r.instance_id,
            url=r.url,
            created=r.created,
        )


class UnregisterResponse(BaseModel):
    project_path: str
    topic_ids: list[int]


class InstanceResponse(BaseModel):
    id: str
    kind: str
    state: str
    project_path: str
    port: int | None
    url: str | None
    pid: int | None
    session_id: str | None
    created_at: int
    updated_at: int

    @classmethod
    def from_info(cls, info: InstanceInfo) -> InstanceResponse:
        return cls(
            id=info.id,
            kind=info.kind.value,
            state=info.state.value,
            project_path=info.project_path,
            port=info.port,
            url=info.url,
            pid=info.pid,
            session_id=info.session_id,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


class TopicResponse(BaseModel):
    topic_id: int
    session_id: str | None
    instance_id: str | None


class StatusResponse(BaseModel):
    project_path: str
    registered: bool
    topics: list[TopicResponse]
    instances: list[InstanceResponse]

    @classmethod
    def build(
        cls, path: str, bindings: list[TopicBinding], instances: list[InstanceInfo]
    ) -> StatusResponse:
        topics = [
            TopicResponse(topic_id=b.topic_id, session_id=b.session_id, instance_id=b.instance_id)
            for b in bindings
        ]
        return cls(
            project_path=path,
            registered=bool(bindings),
            topics=topics,
            instances=[InstanceResponse.from_info(i) for i in instances],
        )
