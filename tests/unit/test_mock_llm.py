"""The mock OpenAI-compatible LLM speaks the streaming format OpenCode expects (reference §13)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
import pytest

from tests.rig.mock_llm import (
    ASK_QUESTION,
    BASH_COMMAND,
    DEFAULT_TITLE,
    QUESTION_TEXT,
    RUN_BASH,
    WRITE_FILE,
    WRITE_FILE_NAME,
    HttpError,
    MockLLM,
    Reasoning,
    Text,
    ToolCall,
)

TITLE_SYSTEM = "You are a title generator. You output ONLY a thread title."


def chat_body(*messages: dict[str, Any], tools: bool = True, stream: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "mock-model",
        "messages": list(messages),
        "stream": stream,
        "stream_options": {"include_usage": True},
        "max_tokens": 4096,
    }
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]
        body["tool_choice"] = "auto"
    return body


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def stream_chunks(llm: MockLLM, body: dict[str, Any]) -> list[Any]:
    """POST a streaming request; return the decoded `data:` payloads ("[DONE]" kept as is)."""
    with httpx.stream("POST", f"{llm.base_url}/chat/completions", json=body, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        payloads = [line[len("data: ") :] for line in resp.iter_lines() if line.startswith("data:")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


def deltas(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c != "[DONE]" and c["choices"]]


def joined(chunks: list[Any], key: str) -> str:
    return "".join(d.get(key) or "" for d in deltas(chunks))


def finish_reasons(chunks: list[Any]) -> list[str]:
    return [
        c["choices"][0]["finish_reason"]
        for c in chunks
        if c != "[DONE]" and c["choices"] and c["choices"][0]["finish_reason"]
    ]


def tool_call_of(chunks: list[Any]) -> tuple[str, str, dict[str, Any]]:
    calls = [call for d in deltas(chunks) for call in d.get("tool_calls", [])]
    head = calls[0]
    arguments = "".join(call["function"]["arguments"] for call in calls)
    return head["id"], head["function"]["name"], json.loads(arguments)


def test_models_lists_the_mock_model(llm: MockLLM) -> None:
    response = httpx.get(f"{llm.base_url}/models", timeout=5)

    assert response.status_code == 200
    assert {"id": "mock-model", "object": "model", "owned_by": "mock"} in response.json()["data"]


def test_default_reply_streams_in_openai_chunk_format(llm: MockLLM) -> None:
    chunks = stream_chunks(llm, chat_body(user("hi")))

    assert deltas(chunks)[0] == {"role": "assistant", "content": ""}
    assert joined(chunks, "content") == "Hello from mock! You said: hi"
    assert len([d for d in deltas(chunks) if d.get("content")]) > 1
    assert finish_reasons(chunks) == ["stop"]
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == []
    assert set(usage_chunk["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert chunks[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])


def test_content_as_list_of_parts_is_understood(llm: MockLLM) -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]

    chunks = stream_chunks(llm, chat_body({"role": "system", "content": "sys"}, user(parts)))

    assert joined(chunks, "content") == "Hello from mock! You said: first\nsecond"


def test_title_request_is_detected_before_scripting(llm: MockLLM) -> None:
    llm.when("hi", Text("scripted answer"))
    title_body = chat_body(
        {"role": "system", "content": TITLE_SYSTEM},
        user("Generate a title"),
        user("hi"),
        tools=False,
    )

    assert joined(stream_chunks(llm, title_body), "content") == DEFAULT_TITLE
    assert joined(stream_chunks(llm, chat_body(user("hi"))), "content") == "scripted answer"
    llm.title = "Custom title"
    assert joined(stream_chunks(llm, title_body), "content") == "Custom title"


def test_first_matching_rule_wins_and_reset_clears_rules_and_log(llm: MockLLM) -> None:
    llm.when("alpha", Text("first rule"))
    llm.when("alpha beta", Text("second rule"))

    assert joined(stream_chunks(llm, chat_body(user("alpha beta"))), "content") == "first rule"
    assert len(llm.requests) == 1

    llm.reset()

    assert llm.requests == []
    assert joined(stream_chunks(llm, chat_body(user("alpha"))), "content").startswith("Hello")


def test_reasoning_is_streamed_before_the_text(llm: MockLLM) -> None:
    llm.when("think", Text("the answer", reasoning="let me think", chunk_size=3))
    llm.when("ponder", Reasoning("pondering", "done"))

    chunks = stream_chunks(llm, chat_body(user("think")))
    kinds = ["reasoning" if d.get("reasoning_content") else "text" for d in deltas(chunks)[1:-1]]

    assert joined(chunks, "reasoning_content") == "let me think"
    assert joined(chunks, "content") == "the answer"
    assert kinds == sorted(kinds)  # every "reasoning" delta precedes every "text" delta
    shorthand = stream_chunks(llm, chat_body(user("ponder")))
    assert (joined(shorthand, "reasoning_content"), joined(shorthand, "content")) == (
        "pondering",
        "done",
    )


def test_run_bash_calls_the_tool_then_answers_after_the_tool_result(llm: MockLLM) -> None:
    first = stream_chunks(llm, chat_body(user(f"please {RUN_BASH}")))
    call_id, name, arguments = tool_call_of(first)

    assert re.fullmatch(r"call_[0-9a-f]+", call_id)
    assert (name, arguments["command"]) == ("bash", BASH_COMMAND)
    assert finish_reasons(first) == ["tool_calls"]
    assert first[-1] == "[DONE]"

    assistant = {"role": "assistant", "content": "", "tool_calls": [{"id": call_id}]}
    tool_result = {"role": "tool", "tool_call_id": call_id, "content": "hello-from-bash\n"}
    follow_up = stream_chunks(llm, chat_body(user(RUN_BASH), assistant, tool_result))

    assert joined(follow_up, "content") == "Tool finished; bash done."
    assert finish_reasons(follow_up) == ["stop"]


def test_tool_result_before_a_newer_user_message_does_not_count(llm: MockLLM) -> None:
    history = [user(RUN_BASH), {"role": "assistant", "content": ""}, {"role": "tool"}]

    chunks = stream_chunks(llm, chat_body(*history, user(f"again {RUN_BASH}")))

    assert tool_call_of(chunks)[1] == "bash"


def test_builtin_question_and_write_tools(llm: MockLLM) -> None:
    _, question_tool, question_args = tool_call_of(
        stream_chunks(llm, chat_body(user(ASK_QUESTION)))
    )
    _, write_tool, write_args = tool_call_of(stream_chunks(llm, chat_body(user(WRITE_FILE))))

    (question,) = question_args["questions"]
    assert question_tool == "question"
    assert question["question"] == QUESTION_TEXT
    assert [option["label"] for option in question["options"]] == ["Red", "Blue"]
    assert all({"label", "description"} <= set(option) for option in question["options"])
    assert (write_tool, write_args["filePath"]) == ("write", WRITE_FILE_NAME)


def test_custom_tool_call_with_custom_follow_up(llm: MockLLM) -> None:
    llm.when("todo", ToolCall("todowrite", {"todos": []}, then="todos written"))

    _, name, arguments = tool_call_of(stream_chunks(llm, chat_body(user("todo"))))
    follow_up = stream_chunks(llm, chat_body(user("todo"), {"role": "tool", "content": "ok"}))

    assert (name, arguments) == ("todowrite", {"todos": []})
    assert joined(follow_up, "content") == "todos written"


def test_chained_tool_calls_take_one_step_per_tool_result(llm: MockLLM) -> None:
    chain = ToolCall("todowrite", {"todos": []}, then=ToolCall("task", {}, then="all done"))
    llm.when("plan it", chain)
    result = {"role": "tool", "content": "ok"}

    steps = [stream_chunks(llm, chat_body(user("plan it"), *[result] * n)) for n in range(3)]

    assert [tool_call_of(step)[1] for step in steps[:2]] == ["todowrite", "task"]
    assert joined(steps[2], "content") == "all done"


@pytest.mark.parametrize(
    ("status", "error_type"), [(400, "invalid_request_error"), (500, "server_error")]
)
def test_http_error_replies_with_an_openai_error_body(
    llm: MockLLM, status: int, error_type: str
) -> None:
    llm.when("fail", HttpError(status, "mock says no"))

    response = httpx.post(
        f"{llm.base_url}/chat/completions", json=chat_body(user("fail")), timeout=5
    )

    assert response.status_code == status
    assert response.json()["error"]["message"] == "mock says no"
    assert response.json()["error"]["type"] == error_type


def test_requests_are_logged_and_titles_are_separated(llm: MockLLM) -> None:
    title_body = chat_body({"role": "system", "content": TITLE_SYSTEM}, user("x"), tools=False)
    stream_chunks(llm, title_body)
    stream_chunks(llm, chat_body(user("logged")))

    assert [body["messages"][-1]["content"] for body in llm.requests] == ["x", "logged"]
    assert [body["messages"][-1]["content"] for body in llm.agent_requests] == ["logged"]


def test_non_streaming_request_gets_a_chat_completion(llm: MockLLM) -> None:
    response = httpx.post(
        f"{llm.base_url}/chat/completions", json=chat_body(user("hi"), stream=False), timeout=5
    )

    assert response.json()["object"] == "chat.completion"
    assert response.json()["choices"][0]["message"]["content"] == "Hello from mock! You said: hi"


async def test_slow_streams_are_served_concurrently(llm: MockLLM) -> None:
    llm.when("slow", Text("abcdef", chunk_size=1, delay_s=0.05))  # 7 delays of 50 ms each

    async def fetch(client: httpx.AsyncClient) -> str:
        body = chat_body(user("slow"))
        async with client.stream("POST", f"{llm.base_url}/chat/completions", json=body) as resp:
            lines = [line async for line in resp.aiter_lines() if line.startswith("data: {")]
        choices = [choice for line in lines for choice in json.loads(line[6:])["choices"]]
        return "".join(choice["delta"].get("content") or "" for choice in choices)

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        texts = await asyncio.gather(fetch(client), fetch(client), fetch(client))
    elapsed = time.monotonic() - started

    assert list(texts) == ["abcdef"] * 3
    assert 0.3 <= elapsed < 0.9


def test_start_and_stop_a_private_instance() -> None:
    with MockLLM() as private:
        url = private.base_url
        assert httpx.get(f"{url}/models", timeout=5).status_code == 200

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", timeout=2)
    with pytest.raises(RuntimeError, match="not started"):
        _ = private.base_url
