"""Wire models of OpenCode 1.18.33's file, VCS and turn-output bodies (observed on a live server).

* `GET /file?path=<dir>` lists one directory (`FileNode[]`, hidden entries included, symlinks
  that leave the directory left out); a path outside the project, a file or a missing path is a
  500.
* `GET /api/fs/read/<path>?location[directory]=<dir>` serves a file's bytes exactly, with a
  Content-Length (a path outside the location or a missing file is a 500). `GET /file/content`
  is not used for downloads: it trims text files ("  a \\n\\n" comes back as "a").
* `GET /find/file?query=&limit=` fuzzy-finds paths (directories end with "/").
* `GET /vcs` names the git branch (null outside a git repository); `GET /vcs/diff?mode=git` is
  the working tree's diff against HEAD, untracked files included.
* `GET /session/{id}/diff?messageID=<user message>` is what that prompt's turn changed, from
  OpenCode's snapshots (which exist only in git repositories).
* In `GET /session/{id}/message`, a completed tool state may carry `attachments` (file parts,
  e.g. the image the `read` tool loaded), and a `patch` part lists the files a step changed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from oc_outpost.opencode.errors import OpenCodeError
from oc_outpost.opencode.wire import WireModel


class FileTooLarge(OpenCodeError):
    """The file is bigger than the caller accepts; ``size`` is what is known of it."""

    def __init__(self, path: str, size: int, limit: int) -> None:
        self.path = path
        self.size = size
        self.limit = limit
        super().__init__(f"{path} is {size} bytes, over the limit of {limit}")


class FileNode(WireModel):
    name: str
    path: str
    type: Literal["file", "directory"]
    ignored: bool = False


class FileDiff(WireModel):
    """One file of a VCS or snapshot diff."""

    file: str = ""
    patch: str = ""
    additions: int = 0
    deletions: int = 0
    status: str | None = None


class VcsInfo(WireModel):
    branch: str | None = None
    default_branch: str | None = None


class OutputFile(WireModel):
    """A file part (a tool attachment or a file the assistant sent): a data: or file: URL."""

    mime: str = ""
    url: str = ""
    filename: str | None = None


class OutputToolState(WireModel):
    status: str = ""
    input: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    attachments: list[OutputFile] = Field(default_factory=list)


class OutputToolPart(WireModel):
    type: Literal["tool"]
    tool: str = ""
    state: OutputToolState = OutputToolState()


class OutputFilePart(OutputFile):
    type: Literal["file"]


class OutputPatchPart(WireModel):
    type: Literal["patch"]
    files: list[str] = Field(default_factory=list)


class OutputOtherPart(WireModel):
    type: str = ""


def _output_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("tool", "file", "patch") else "other"


OutputPart = Annotated[
    Annotated[OutputToolPart, Tag("tool")]
    | Annotated[OutputFilePart, Tag("file")]
    | Annotated[OutputPatchPart, Tag("patch")]
    | Annotated[OutputOtherPart, Tag("other")],
    Discriminator(_output_tag),
]


class OutputMessageInfo(WireModel):
    id: str
    role: str


class OutputMessage(WireModel):
    """A message of `GET /session/{id}/message` seen only for what it produced."""

    info: OutputMessageInfo
    parts: list[OutputPart] = Field(default_factory=list)
