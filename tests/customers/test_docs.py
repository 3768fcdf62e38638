"""docs/workspace.md describes every workspace request and names every workspace REST path."""

from __future__ import annotations

from pathlib import Path

from gateway.customers.workspace import WorkspaceService
from gateway.http.v1 import customers, desk, ingest

DOC = (Path(__file__).resolve().parents[2] / "docs" / "workspace.md").read_text()


def test_every_workspace_request_is_in_the_table():
    for name in WorkspaceService.requests(WorkspaceService.__new__(WorkspaceService)):
        assert f"| `{name}` |" in DOC, name


def test_every_workspace_rest_path_is_named():
    for op in (*customers.OPERATIONS, *ingest.OPERATIONS, *desk.OPERATIONS):
        last = op.path.rstrip("/").rsplit("/", 1)[-1]
        resource = op.path.split("/")[2]
        assert f"/v1/{resource}" in DOC and last.strip("{}") in DOC, op.path
