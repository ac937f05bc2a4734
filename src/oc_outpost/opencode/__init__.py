"""Typed client library for the OpenCode 1.18.33 server API (a leaf: imports nothing of ours).

* `client.OpenCodeClient`: the HTTP routes (sessions, prompts, abort, permissions, questions).
* `stream.iter_events` / `stream.EventStream`: the SSE event stream, raw or supervised.
* `events`: typed frozen events and `parse_event` for `/event` and `/global/event` frames.
* `wire`: pydantic models of the JSON bodies. `errors`: the exception types.
"""
