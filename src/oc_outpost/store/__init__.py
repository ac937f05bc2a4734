"""SQLite persistence: instances (orchestrator DB), topic bindings, pending requests, bot state.

One module per table; `db` opens a database and runs its migrations (`migrations`).
"""
