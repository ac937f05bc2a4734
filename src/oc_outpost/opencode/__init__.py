"""Typed client library for the OpenCode 1.18.33 server API (a leaf: imports nothing of ours).

* `client.OpenCodeClient`: the HTTP routes (sessions, prompts, abort, permissions, questions).
* `stream.iter_events` / `stream.EventStream`: the SSE event stream, raw or supervised.
* `events`: the typed events, with the parts, messages and requests they share with the REST
  API, and `parse_event` / `parse_event_json` for `/event` and `/global/event` frames.
* `wire`: pydantic models of the REST-only bodies. `errors`: the exception types.
"""
