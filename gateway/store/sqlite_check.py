"""Damage checks and repair of a SQLite store: what ``kefu serve`` runs before serving and what
``kefu store check`` / ``kefu store repair`` run for an operator.

A store damaged by a disk, a copy or a crash on a machine that lies about fsync must not be served
in silence: SQLite opens a corrupted WAL without a word (it stops replaying at the first bad frame,
dropping every commit after it), and a corrupt index returns rows twice or misses some (the
messages' primary key also gives each conversation's last seq, so a corrupt one could hand out
sequence numbers clients have seen).

The startup check is bounded in what it reads: the WAL's frame headers and ``PRAGMA quick_check``
(every page, not the index contents). ``kefu store check`` adds ``PRAGMA integrity_check``, which
also compares every index with its table; ``kefu store repair`` rebuilds the indexes.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from dataclasses import dataclass, field

WAL_MAGIC = (0x377F0682, 0x377F0683)  # little-endian and big-endian checksums
WAL_HEADER = 32
FRAME_HEADER = 24

@dataclass
class Report:
    """What a check found: an empty ``problems`` list means the store may be served."""

    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return bool(self.problems)


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum over ``data`` (a multiple of 8 bytes), continuing from (s0, s1)."""
    fmt = ">" if big_endian else "<"
    words = struct.unpack(f"{fmt}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def check_wal(path: str) -> list[str]:
    """Frames of the current WAL generation after one that fails its checksum: committed
    transactions that SQLite will silently drop when it opens the file."""
    wal = path + "-wal"
    try:
        with open(wal, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    if len(data) < WAL_HEADER:
        return []  # an empty or freshly created WAL holds nothing
    magic, _, page_size, _, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:WAL_HEADER])
    if magic not in WAL_MAGIC:
        return [f"{wal}: not a WAL file (bad magic)"]
    big_endian = magic & 1 == 1
    s0, s1 = _checksum(data[:24], 0, 0, big_endian)
    if (s0, s1) != (c1, c2):
        return [f"{wal}: the WAL header fails its checksum"] if len(data) > WAL_HEADER else []
    frame = FRAME_HEADER + page_size
    pos, bad_at = WAL_HEADER, None
    while pos + frame <= len(data):
        header = data[pos : pos + FRAME_HEADER]
        _, _, fs1, fs2, f1, f2 = struct.unpack(">6I", header)
        if (fs1, fs2) != (salt1, salt2):
            break  # a frame of an older generation: the WAL's valid part ended before it
        if bad_at is None:
            s0, s1 = _checksum(header[:8], s0, s1, big_endian)
            s0, s1 = _checksum(data[pos + FRAME_HEADER : pos + frame], s0, s1, big_endian)
            if (s0, s1) != (f1, f2):
                bad_at = pos
        else:
            # Checksums chain, so later frames cannot be verified; a later frame of this
            # generation means a commit was written after the damaged one.
            return [
                f"{wal}: frame at byte {bad_at} fails its checksum and frames written after it follow:"
                " commits after it would be silently dropped"
            ]
        pos += frame
    return []


def check(path: str, *, full: bool = False) -> Report:
    """Look for damage without changing the file (the WAL is replayed read-only by SQLite only
    once the WAL check passed)."""
    report = Report()
    if not os.path.exists(path):
        return report
    report.problems += check_wal(path)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        report.problems.append(f"{path}: cannot open: {exc}")
        return report
    try:
        pragma = "integrity_check" if full else "quick_check"
        rows = [row[0] for row in conn.execute(f"PRAGMA {pragma}(20)").fetchall()]
        if rows != ["ok"]:
            report.problems += [f"{pragma}: {row}" for row in rows]
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"{path}: {exc}")
    finally:
        conn.close()
    return report


def repair(path: str) -> Report:
    """Rebuild the indexes (each conversation's last seq comes from the messages' primary key:
    rebuilt from the rows, it is the highest seq stored, so no seq is handed out twice) and the
    file, then check again in full. Messages lost from a damaged WAL cannot be brought back; the report says what
    remains."""
    report = Report()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("REINDEX")
        report.repaired.append("indexes rebuilt (REINDEX)")
        conn.execute("VACUUM")  # pages the damage left unreachable are freed, the file is rewritten whole
        report.repaired.append("file rewritten (VACUUM)")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"repair failed: {exc}: restore from a backup, or salvage with the sqlite3 shell's .recover")
        return report
    finally:
        conn.close()
    report.problems += check(path, full=True).problems
    return report
