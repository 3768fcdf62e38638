"""The README keeps its promises: the two commands, the configuration table, the client example."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import fields
from pathlib import Path

import trio

from gateway.config import Config

from .support import token

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block(heading: str, lang: str) -> str:
    section = README.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    lines = [line for line in block("Quick start", "sh").splitlines() if line.strip()]
    assert len(lines) == 2
    assert "kefu serve" in lines[0] and "pytest" in lines[1]
    assert lines[1] in (ROOT / ".ci" / "run").read_text()


def test_configuration_table_lists_every_setting():
    for f in fields(Config):
        assert f"`--{f.name.replace('_', '-')}` | `KEFU_{f.name.upper()}`" in README, f.name


async def test_the_client_example_runs_against_a_gateway(start_gateway):
    gw = await start_gateway(store="sqlite", routing="on")  # as `kefu serve` runs: the bot greets first
    code = block("A client in a dozen lines", "python")
    code = code.replace("ws://127.0.0.1:8700/ws", gw.url).replace('"eyJ..."', repr(token("alice")))
    out = io.StringIO()

    def run():
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})

    with trio.fail_after(10):
        await trio.to_thread.run_sync(run)
    printed = out.getvalue()
    assert "'t': 'ack'" in printed and "'dup': False" in printed  # (the bot's frames may come before or after)
