"""Small pieces of the Telegram experience: turn folding details, topic names, button data,
project listing, files and history (the end-to-end tests cover the flows)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from oc_outpost.core import turn as turns
from oc_outpost.core.chat import Attachment
from oc_outpost.core.naming import is_placeholder, topic_name
from oc_outpost.core.projects import find_project, list_projects, project_key
from oc_outpost.core.prompting import prompt_parts
from oc_outpost.core.sessions import history_tail
from oc_outpost.core.turn import TurnPhase, TurnSnapshot
from oc_outpost.opencode import events as ev
from oc_outpost.opencode.wire import FileInput, MessageWithParts, TextInput
from oc_outpost.telegram import callbacks
from oc_outpost.telegram.handlers import file_mime


def test_a_re_announced_user_message_of_an_earlier_turn_is_not_this_turns_start() -> None:
    turn = TurnSnapshot(1, "ses_a", 0.0, earlier_user_message="msg_200")
    old = ev.MessageUpdated("ses_a", ev.Message("msg_150", "user"))
    new = ev.MessageUpdated("ses_a", ev.Message("msg_300", "user"))
    turn = turns.fold(turns.fold(turn, old), new)
    assert turn.user_messages == ("msg_300",)
    assert turn.last_user_message == "msg_300"


def test_a_stop_requested_turn_ends_stopped_even_without_an_error_event() -> None:
    turn = replace(TurnSnapshot(1, "ses_a", 0.0), abort_requested=True)
    assert turns.finish(turn, 3.0).phase == TurnPhase.ABORTED


def test_sub_agent_tools_are_marked_and_its_text_is_not_the_answer() -> None:
    tool = ev.ToolPart("p1", "c1", "bash", "running", input={"command": "ls"})
    text = ev.TextPart("p2", "child says hi")
    turn = TurnSnapshot(1, "ses_parent", 0.0)
    turn = turns.fold_child(turn, ev.PartUpdated("ses_child", "m1", tool))
    turn = turns.fold_child(turn, ev.PartUpdated("ses_child", "m1", text))
    assert [(t.tool, t.detail, t.sub) for t in turn.tools] == [("bash", "ls", True)]
    assert turn.answer == ""


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("New session - 2026-01-02T03:04:05.678Z", "demo"),
        ("", "demo"),
        ("Fix the login bug", "demo · Fix the login bug"),
        ("x" * 300, "demo · " + "x" * 120 + "…"),
    ],
)
def test_topic_names_come_from_real_titles_only_and_fit(title: str, expected: str) -> None:
    name = topic_name("demo", title)
    assert name == expected
    assert len(name) <= 128
    assert is_placeholder(title) == (expected == "demo")


def test_button_data_round_trips_and_fits_64_bytes() -> None:
    session = "ses_" + "a" * 26
    datas = {
        callbacks.permission_data("tok-123_abc", "a"): callbacks.PermissionPress(
            "tok-123_abc", "a"
        ),
        callbacks.question_data("tok", 3): callbacks.QuestionPress("tok", 3),
        callbacks.stop_data(session, "a1b2c3"): callbacks.StopPress(session, "a1b2c3"),
        callbacks.link_data(project_key("demo")): callbacks.LinkPress(project_key("demo")),
        callbacks.open_data(project_key("demo")): callbacks.OpenPress(project_key("demo")),
        callbacks.connect_data(session): callbacks.ConnectPress(session),
    }
    for data, press in datas.items():
        assert len(data.encode()) <= 64
        assert callbacks.parse(data) == press
    for forged in ("", "p:tok:x", "q:tok:-1", "x:evil", "l:../..", "c:ses_../x", "z:1"):
        assert callbacks.parse(forged) is None


def test_projects_exclude_hidden_files_and_links_out_of_the_base(tmp_path: Path) -> None:
    base = tmp_path / "base"
    for name in ("b-proj", "A-proj", ".hidden"):
        (base / name).mkdir(parents=True)
    (base / "file.txt").write_text("x")
    (base / "out").symlink_to(tmp_path, target_is_directory=True)
    (base / "in").symlink_to(base / "b-proj", target_is_directory=True)
    assert [p.name for p in list_projects(base)] == ["A-proj", "b-proj", "in"]
    assert find_project(base, project_key("A-proj")) == base / "A-proj"
    assert find_project(base, project_key("out")) is None
    assert list_projects(tmp_path / "missing") == []


def test_files_become_data_url_parts_after_the_caption_and_their_names() -> None:
    parts = prompt_parts("look", (Attachment("a.txt", "text/plain", b"hi"),))
    assert parts == [
        TextInput(text="look\n\n[Attached: a.txt]"),
        FileInput(mime="text/plain", url="data:text/plain;base64,aGk=", filename="a.txt"),
    ]
    album = (
        Attachment("photo.jpg", "image/jpeg", b""),
        Attachment("b.pdf", "application/pdf", b""),
    )
    assert prompt_parts("", album)[0] == TextInput(text="[Attached: photo.jpg, b.pdf]")
    assert [type(p) for p in prompt_parts("", album)] == [TextInput, FileInput, FileInput]
    assert prompt_parts("just text", ()) == [TextInput(text="just text")]


def test_generic_binary_files_get_a_better_media_type_when_possible() -> None:
    generic = "application/octet-stream"
    assert file_mime("notes.txt", generic, b"x") == "text/plain"
    assert file_mime("Makefile", generic, b"all:\n") == "text/plain"
    assert file_mime("blob", generic, b"\xff\xfe\x00") == generic
    assert file_mime("log.bin", generic, b"plain words\n") == "text/plain"  # a guess of generic
    assert file_mime("x.bin", "application/pdf", b"") == "application/pdf"


def test_history_keeps_the_last_text_messages_cut_to_size() -> None:
    def message(i: int, role: str, text: str) -> MessageWithParts:
        return MessageWithParts.model_validate(
            {
                "info": {
                    "id": f"msg_{i}",
                    "sessionID": "ses_a",
                    "role": role,
                    "time": {"created": i},
                },
                "parts": [{"id": f"p{i}", "type": "text", "text": text}],
            }
        )

    messages = [message(i, "user" if i % 2 else "assistant", f"text {i}") for i in range(10)]
    messages.append(message(10, "assistant", "y" * 2000))
    tail = history_tail(messages)
    assert [e.text for e in tail[:-1]] == [f"text {i}" for i in range(5, 10)]
    assert tail[-1].role == "assistant" and len(tail[-1].text) == 700
