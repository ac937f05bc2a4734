"""Versioned schema migrations. Entry N (0-based) brings a database to `user_version` N + 1.

Never edit or reorder a shipped entry: append a new one.
"""

from __future__ import annotations

from typing import Final

ORCHESTRATOR_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE instances (
        id           TEXT PRIMARY KEY NOT NULL,
        kind         TEXT NOT NULL,
        project_path TEXT NOT NULL,
        port         INTEGER NULL,
        url          TEXT NULL,
        pid          INTEGER NULL,
        state        TEXT NOT NULL,
        session_id   TEXT NULL,
        password     TEXT NULL,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL
    );
    CREATE INDEX idx_instances_port ON instances(port);
    CREATE INDEX idx_instances_project_path ON instances(project_path);
    CREATE INDEX idx_instances_state ON instances(state);
    """,
)

TOPIC_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE topic_mappings (
        chat_id            INTEGER NOT NULL,
        topic_id           INTEGER NOT NULL,
        project_path       TEXT NOT NULL,
        session_id         TEXT NULL,
        instance_id        TEXT NULL,
        streaming_enabled  INTEGER NOT NULL DEFAULT 1 CHECK (streaming_enabled IN (0, 1)),
        topic_name_updated INTEGER NOT NULL DEFAULT 0 CHECK (topic_name_updated IN (0, 1)),
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL,
        PRIMARY KEY (chat_id, topic_id)
    );
    CREATE INDEX idx_topic_mappings_chat_id ON topic_mappings(chat_id);
    CREATE INDEX idx_topic_mappings_session_id ON topic_mappings(session_id);
    CREATE INDEX idx_topic_mappings_instance_id ON topic_mappings(instance_id);

    CREATE TABLE pending_requests (
        token       TEXT PRIMARY KEY NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('permission', 'question')),
        request_id  TEXT NOT NULL,
        session_id  TEXT NOT NULL,
        instance_id TEXT NULL,
        chat_id     INTEGER NOT NULL,
        topic_id    INTEGER NOT NULL,
        message_id  INTEGER NULL,
        payload     TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'answered', 'expired')),
        decision    TEXT NULL,
        answered_by TEXT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE INDEX idx_pending_requests_request_id ON pending_requests(request_id);
    CREATE INDEX idx_pending_requests_session_status ON pending_requests(session_id, status);

    CREATE TABLE bot_state (
        key        TEXT PRIMARY KEY NOT NULL,
        value      TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE buttons (
        token      TEXT PRIMARY KEY NOT NULL,
        kind       TEXT NOT NULL,
        topic_id   INTEGER NOT NULL,
        payload    TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX idx_buttons_created_at ON buttons(created_at);

    CREATE TABLE button_presses (
        query_id   TEXT PRIMARY KEY NOT NULL,
        press_key  TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX idx_button_presses_key ON button_presses(press_key, created_at);
    CREATE INDEX idx_button_presses_created_at ON button_presses(created_at);
    """,
)
