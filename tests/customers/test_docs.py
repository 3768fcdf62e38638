"""docs/workspace.md describes every workspace request (docs/api.md every REST operation: tests/http)."""

from __future__ import annotations

from pathlib import Path

from gateway.customers.workspace import WorkspaceService

DOC = (Path(__file__).resolve().parents[2] / "docs" / "workspace.md").read_text()


def test_every_workspace_request_is_in_the_table():
    for name in WorkspaceService.requests(WorkspaceService.__new__(WorkspaceService)):
        assert f"| `{name}` |" in DOC, name

