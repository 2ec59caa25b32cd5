"""Every ``slimcnn COMMAND --option`` the README shows exists: a user learns the CLI from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from slimcnn.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL = ("sh", "bash", "console", "")


def _shell_lines(text: str) -> list[str]:
    """The lines of the shell code blocks, continuation lines joined, comments dropped."""
    blocks: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if block is None:
                block, lang = [], line.strip()[3:]
            else:
                if lang in SHELL:
                    blocks.append("\n".join(block))
                block = None
        elif block is not None:
            block.append(line)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.split(" #")[0] for line in joined.splitlines()]


def _invocations(text: str) -> list[tuple[str, str, str]]:
    """(command, rest of the invocation, where) for code blocks and inline `slimcnn ...` spans."""
    found = []
    inline = re.findall(r"`(slimcnn [a-z]+ [^`\n]*)`", text)
    for where in (*_shell_lines(text), *inline):
        for m in re.finditer(r"(?:^|[\s;&(|])slimcnn\s+([a-z]+)([^;&|]*)", where):
            found.append((m.group(1), m.group(2), where.strip()))
    return found


@pytest.mark.skipif(not README.is_file(), reason="README.md is not beside the tests (installed package)")
def test_every_readme_command_and_option_exists() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    found = _invocations(README.read_text(encoding="utf-8"))
    assert len(found) > 30  # the parser still sees the README's commands
    wrong = []
    for name, rest, where in found:
        if name not in commands:
            wrong.append(f"unknown command {name!r}: {where[:120]}")
            continue
        options = {o for p in commands[name].params for o in (*p.opts, *p.secondary_opts)}
        wrong += [f"{name} has no {flag}: {where[:120]}" for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest)
                  if flag not in options]
    assert not wrong, "\n".join(wrong)
