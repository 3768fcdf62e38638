"""A damaged SQLite store is noticed, refused and repaired: the startup check, `kefu store check`
and `kefu store repair`, and errors of a damaged store that say they will not go away."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.store import SqliteBackend, StoreDamaged
from gateway.store import sqlite_check
from gateway.store.sqlite_check import FRAME_HEADER, WAL_HEADER

from .test_sqlite import append_seqs, create, last_seq

KEFU = [sys.executable, "-m", "gateway"]


def kefu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KEFU, *args], capture_output=True, text=True, timeout=60)


def store_with_unflushed_wal(data_dir: Path, commits: int = 6) -> Path:
    """A store as a killed process leaves it: commits still in the WAL (no checkpoint ran)."""
    path = data_dir / "kefu.sqlite3"
    data_dir.mkdir(parents=True, exist_ok=True)
    script = textwrap.dedent(f"""
        import os
        from gateway.store import sqlite
        sqlite._CHECKPOINT_INTERVAL_S = 3600  # no background checkpoint before the "kill"
        b = sqlite.SqliteBackend({str(path)!r})
        b.open()
        b._writer.execute("PRAGMA wal_autocheckpoint = 0")
        from gateway.model import Conversation, Participant, CreateConversation, AppendMessage, OPEN
        b.apply_batch([CreateConversation(Conversation("c1", "t1", "s1", "app", OPEN, 1), (Participant("c1", "s1", "shopper", 1),))])
        for i in range({commits}):
            b.apply_batch([AppendMessage("c1", f"m{{i}}", "s1", "shopper", b"x" * 3000)])
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert (data_dir / "kefu.sqlite3-wal").stat().st_size > WAL_HEADER
    return path


def test_a_sound_store_passes(tmp_path: Path) -> None:
    path = store_with_unflushed_wal(tmp_path / "data")
    assert sqlite_check.check(str(path)).problems == []
    result = kefu("store", "check", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0 and "ok" in result.stdout


def test_a_corrupted_wal_frame_is_damage_and_serve_refuses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = store_with_unflushed_wal(data)
    wal = Path(str(path) + "-wal")
    raw = bytearray(wal.read_bytes())
    page_size = int.from_bytes(raw[8:12], "big")
    raw[WAL_HEADER + FRAME_HEADER + 100] ^= 0xFF  # the first frame's page: every later commit is dropped silently
    wal.write_bytes(bytes(raw))
    assert any("fails its checksum" in p for p in sqlite_check.check(str(path)).problems)
    assert page_size > 0

    result = kefu("store", "check", "--data-dir", str(data))
    assert result.returncode == 3 and "damaged:" in result.stdout
    served = kefu("serve", "--data-dir", str(data), "--port", "0", "--metrics-port", "-1")
    assert served.returncode == 3
    assert "refusing to serve a damaged store" in served.stderr and "kefu store repair" in served.stderr


def stale_message_index(path: Path, keep_up_to: int) -> None:
    """Make the messages' primary key hold only the seqs up to ``keep_up_to``, as a lost write of
    an index page leaves it: well-formed pages that quick_check passes, entries missing."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE INDEX stale ON messages (conv_id, seq) WHERE seq <= {keep_up_to}")
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'stale'").fetchone()
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("DELETE FROM sqlite_master WHERE name = 'stale'")
        conn.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = 'sqlite_autoindex_messages_1'", (root,))


def test_a_stale_message_index_is_found_and_repaired_without_reusing_a_seq(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "kefu.sqlite3"
    backend = SqliteBackend(path)
    backend.open()
    create(backend, "c1")
    assert append_seqs(backend, "c1", ["a", "b", "c", "d", "e"]) == [1, 2, 3, 4, 5]
    backend.close()
    stale_message_index(path, keep_up_to=2)
    with sqlite3.connect(path) as conn:  # the damage: the last seq read through the index is behind
        assert conn.execute("SELECT max(seq) FROM messages WHERE conv_id = 'c1'").fetchone() == (2,)

    checked = kefu("store", "check", "--data-dir", str(data))
    assert checked.returncode == 3 and "missing from index sqlite_autoindex_messages_1" in checked.stdout
    result = kefu("store", "repair", "--data-dir", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "indexes rebuilt" in result.stdout
    backend = SqliteBackend(path)
    backend.open()
    try:
        assert last_seq(backend, "c1") == 5
        assert append_seqs(backend, "c1", ["f"]) == [6]  # never a seq a client has already seen
    finally:
        backend.close()


def test_a_corrupt_page_read_is_a_damage_error_not_a_retryable_one(tmp_path: Path) -> None:
    path = tmp_path / "kefu.sqlite3"
    backend = SqliteBackend(path)
    backend.open()
    create(backend, "c1")
    append_seqs(backend, "c1", [f"m{i}" for i in range(50)])
    backend.close()
    with sqlite3.connect(path) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    assert any("quick_check" in p or "malformed" in p for p in sqlite_check.check(str(path)).problems)
    backend = SqliteBackend(path)
    backend.open()
    try:
        with pytest.raises(StoreDamaged):
            backend.read_messages("c1")
    finally:
        backend.close()


async def test_a_damaged_store_answers_storage_damaged_over_the_socket(start_gateway, tmp_path: Path) -> None:
    from gateway.model import OPEN, AppendMessage, Conversation, CreateConversation, Participant

    from ..support import connect, token

    data = tmp_path / "data"
    data.mkdir()
    path = data / "kefu.sqlite3"
    backend = SqliteBackend(path)
    backend.open()
    backend.apply_batch([CreateConversation(Conversation("c1", "shop1", "alice", "app", OPEN, 1), (Participant("c1", "alice", "shopper", 1),))])
    backend.apply_batch([AppendMessage("c1", f"m{i}", "alice", "shopper", b"\x81\xa1k\xa1v") for i in range(50)])
    backend.close()
    with sqlite3.connect(path) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    gw = await start_gateway(store="sqlite")
    async with connect(gw.url, token("alice")) as client:
        reply = await client.request("history", conv="c1")
        assert reply["t"] == "error" and reply["code"] == "storage_damaged" and reply["retryable"] is False
        assert (await client.request("ping"))["t"] == "pong"  # the connection and the process live on
