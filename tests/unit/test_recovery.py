"""Reconciliation's cut-off rule: is the last turn's answer complete?"""

from __future__ import annotations

from typing import Any

import pytest

from oc_outpost.core.recovery import CUT_OFF, NO_ANSWER, cut_off_reason
from oc_outpost.opencode.wire import MessageWithParts


def message(role: str, *, completed: bool = True, error: str | None = None) -> MessageWithParts:
    info: dict[str, Any] = {
        "id": f"msg_{role}",
        "sessionID": "ses_1",
        "role": role,
        "time": {"created": 1, **({"completed": 2} if completed else {})},
    }
    if error:
        info["error"] = {"name": error, "data": {"message": "boom"}}
    return MessageWithParts.model_validate({"info": info, "parts": []})


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([message("user"), message("assistant")], None),
        ([message("user"), message("assistant", completed=False)], CUT_OFF),
        ([message("user"), message("assistant", completed=False, error="APIError")], None),
        ([message("user")], NO_ANSWER),
        ([], NO_ANSWER),
        ([message("user"), message("assistant"), message("user")], NO_ANSWER),
    ],
)
def test_cut_off_reason(messages: list[MessageWithParts], expected: str | None) -> None:
    assert cut_off_reason(messages) == expected
