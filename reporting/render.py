"""One renderer for the report: a list of (kind, content) blocks to markdown or HTML, and
the rows of its tables (ours beside the paper's, labelled with the run they came from)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    what: str
    ours: float | None
    paper: float | None
    unit: str
    source: str  # the stage and output the number came from
    run: str  # the profile and data of ours, e.g. "tiny, digits"
    comparable: bool  # paper profile on the real data: only then is the difference shown
    paper_known: str = "paper"  # how the paper's number is known (docs/method.md §7)

    def cells(self) -> list[str]:
        confirmed = self.paper_known == "paper"
        diff = None if self.ours is None or self.paper is None else self.ours - self.paper
        return [
            self.what,
            _fmt(self.ours),
            _fmt(self.paper) if confirmed else f"{_fmt(self.paper)} ({self.paper_known})",
            f"{diff:+.4g}" if diff is not None and self.comparable and confirmed else "",
            self.unit,
            self.run,
            self.source,
        ]


HEADER = ["", "ours", "paper", "ours - paper", "unit", "ours: profile, data", "from"]


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"


@dataclass(frozen=True)
class RunInfo:
    label: str  # "tiny, digits"
    comparable: bool

    def row(
        self,
        what: str,
        ours: float | None,
        paper: float | None,
        unit: str,
        src: str,
        paper_known: str = "paper",
    ) -> Row:
        return Row(what, ours, paper, unit, src, self.label, self.comparable, paper_known)


def table_md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _table_md(rows: list[Row]) -> str:
    return table_md(HEADER, [r.cells() for r in rows])


def _table_html(rows: list[Row]) -> str:
    return table_html(HEADER, [r.cells() for r in rows])


def to_markdown(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h1":
            out.append(f"# {content}")
        elif kind == "h2":
            out.append(f"## {content}")
        elif kind == "table":
            out.append(_table_md(content))
        elif kind == "grid":  # (header, rows of cells)
            out.append(table_md(*content))
        elif kind == "img":
            out.append(f"![{content[1]}]({content[0]})")
        elif kind == "pre_md":  # a markdown table written as text
            out.append(content)
        else:
            out.append(content)
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "table":
            out.append(_table_html(content))
        elif kind == "grid":
            out.append(table_html(*content))
        elif kind == "img":
            src, alt = (html.escape(c) for c in content)
            out.append(f'<img src="{src}" alt="{alt}" style="max-width:100%">')
        elif kind == "pre_md":
            out.append(f"<pre>{html.escape(content)}</pre>")
        else:
            text = html.escape(content).replace("**", "")
            out.append(f"<p>{text}</p>")
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    body = "\n".join(out)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>PC-DARTS results</title>"
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )
