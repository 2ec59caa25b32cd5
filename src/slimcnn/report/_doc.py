"""A report as data (sections of paragraphs, tables and figures), rendered to Markdown and self-contained HTML."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slimcnn.report.tables import format_cell, markdown_table


@dataclass(frozen=True)
class Table:
    """A table: ``rows`` hold raw values (formatted by :func:`format_cell`) or preformatted strings."""

    headers: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG figure: ``name`` is its file in the run folder (Markdown links it, HTML embeds ``png``)."""

    name: str
    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class Items:
    """A bulleted list of one-line texts."""

    items: tuple[str, ...]


Block = str | Table | Figure | Items
"""A paragraph (plain text with ``**bold**`` and ``code`` spans), a table, a figure or a list."""


@dataclass(frozen=True)
class Section:
    """A titled part of the report."""

    title: str
    blocks: tuple[Block, ...] = ()


@dataclass(frozen=True)
class Document:
    """The whole report: a title, a one-line subtitle and its sections."""

    title: str
    subtitle: str = ""
    sections: tuple[Section, ...] = field(default_factory=tuple)


def to_markdown(doc: Document) -> str:
    """The report as GitHub-flavoured Markdown (figures linked as files beside it)."""
    out = [f"# {doc.title}\n"]
    if doc.subtitle:
        out.append(f"{doc.subtitle}\n")
    for sec in doc.sections:
        out.append(f"## {sec.title}\n")
        for b in sec.blocks:
            if isinstance(b, Table):
                if b.caption:
                    out.append(f"{b.caption}\n")
                out.append(markdown_table(b.headers, b.rows))
            elif isinstance(b, Figure):
                out.append(f"![{b.name}]({b.name})\n")
                if b.caption:
                    out.append(f"*{b.caption}*\n")
            elif isinstance(b, Items):
                out.append("".join(f"- {i}\n" for i in b.items))
            else:
                out.append(f"{b}\n")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}.cap{color:#555;font-size:.9em;margin-bottom:0}
"""


def to_html(doc: Document) -> str:
    """The report as one self-contained HTML page: inline CSS, figures as ``data:image/png;base64`` URIs."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(doc.title)}</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>{_inline(doc.title)}</h1>"]
    if doc.subtitle:
        parts.append(f'<p class="sub">{_inline(doc.subtitle)}</p>')
    for sec in doc.sections:
        parts.append(f"<h2>{_inline(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, Table):
                parts.append(_html_table(b))
            elif isinstance(b, Figure):
                data = base64.b64encode(b.png).decode("ascii")
                alt = html.escape(_plain(b.caption) or b.name, quote=True)
                parts.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                             + (f"<figcaption>{_inline(b.caption)}</figcaption>" if b.caption else "") + "</figure>")
            elif isinstance(b, Items):
                parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
            else:
                parts.append(f"<p>{_inline(b)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(f"<td>{_inline(format_cell(v))}</td>" for v in row) + "</tr>" for row in t.rows)
    cap = f'<p class="cap">{_inline(t.caption)}</p>' if t.caption else ""
    return f"{cap}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    """Escape, then turn Markdown ``code`` and ``**bold**`` spans into tags."""
    out = []
    for i, chunk in enumerate(str(text).split("`")):
        if i % 2:
            out.append(f"<code>{html.escape(chunk)}</code>")
            continue
        pieces = html.escape(chunk).split("**")
        out.append("".join(f"<b>{p}</b>" if j % 2 else p for j, p in enumerate(pieces)))
    return "".join(out)


def _plain(text: str) -> str:
    return str(text).replace("**", "").replace("`", "")


def blocks(*items: Block | None | Sequence[Block]) -> tuple[Block, ...]:
    """Flatten optional blocks and lists of blocks into a section's tuple (``None`` is skipped)."""
    out: list[Block] = []
    for it in items:
        if it is None:
            continue
        if isinstance(it, (str, Table, Figure, Items)):
            out.append(it)
        else:
            out.extend(it)
    return tuple(out)
