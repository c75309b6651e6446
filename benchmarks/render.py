"""Fill the results tables in README.md and docs/ from the CSV files under benchmarks/results/.

A Markdown page asks for a table with a block:

    <!-- table: benchmarks/results/NAME.csv -->
    <!-- /table -->

and this script writes the CSV between the two lines as a Markdown table, verbatim (the CSV's
first row is the header), followed by the source note in ``benchmarks/results/NAME.source.md``
when there is one (the command that produced the figures and the date). Options after the path
pick part of a file: ``cols="a,b"`` (these columns, in this order) and ``rows="column:v1,v2"``
(rows whose column holds one of the values; repeat for several columns). A figure is therefore
typed once, in its results file, and every page that shows it is rendered from there.

    python benchmarks/render.py           # rewrite the blocks in place
    python benchmarks/render.py --check   # exit 1 naming each stale block (CI), change nothing
"""
from __future__ import annotations

import argparse
import csv
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^<!-- table: (?P<spec>.+?) -->\n(?P<body>.*?)^<!-- /table -->$", re.M | re.S)


class RenderError(Exception):
    """A block that cannot be rendered: a missing file, an unknown column, a bad option."""


def pages(root: Path = ROOT) -> list[Path]:
    """Every page that may hold a table block: the README and the docs site's Markdown."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _cell(text: str) -> str:
    return text.strip().replace("|", "\\|").replace("\n", " ")


def _parse_spec(spec: str) -> tuple[str, list[str] | None, list[tuple[str, set[str]]]]:
    path, *options = shlex.split(spec)
    cols: list[str] | None = None
    rows: list[tuple[str, set[str]]] = []
    for option in options:
        key, sep, value = option.partition("=")
        if key == "cols" and sep:
            cols = [c.strip() for c in value.split(",")]
        elif key == "rows" and sep and ":" in value:
            column, _, values = value.partition(":")
            rows.append((column.strip(), {v.strip() for v in values.split(",")}))
        else:
            raise RenderError(f"unknown option {option!r} (use cols=\"a,b\" or rows=\"column:v1,v2\")")
    return path, cols, rows


def render_table(spec: str, root: Path = ROOT, link: bool = False) -> str:
    """The Markdown that belongs between a block's two lines for ``spec`` (path and options);
    ``link``: name the results file as a relative link (the README; the docs site only builds
    links to its own pages)."""
    path, cols, rows = _parse_spec(spec)
    csv_path = root / path
    if not csv_path.is_file():
        raise RenderError(f"{path}: no such results file")
    with csv_path.open(newline="", encoding="utf-8") as f:
        header, *records = list(csv.reader(f))
    for column in [*(cols or []), *(c for c, _ in rows)]:
        if column not in header:
            raise RenderError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
    for column, values in rows:
        records = [r for r in records if r[header.index(column)].strip() in values]
    if not records:
        raise RenderError(f"{path}: no rows left after rows=")
    keep = [header.index(c) for c in cols] if cols else list(range(len(header)))
    lines = ["| " + " | ".join(_cell(header[i]) for i in keep) + " |",
             "|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(_cell(r[i]) if i < len(r) else "" for i in keep) + " |" for r in records]
    source = csv_path.with_name(csv_path.name.removesuffix(".csv") + ".source.md")
    note = f"[`{path}`]({path})" if link else f"`{path}`"
    if source.is_file():
        note += ": " + " ".join(source.read_text(encoding="utf-8").split())
    return "\n".join(lines) + f"\n\n<sub>Source: {note}</sub>\n"


def render_page(text: str, root: Path = ROOT, link: bool = False) -> str:
    """``text`` with every table block filled from its results file."""
    def fill(match: re.Match) -> str:
        spec = match["spec"]
        return f"<!-- table: {spec} -->\n\n{render_table(spec, root, link)}\n<!-- /table -->"
    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a rendered table differs from its results file")
    args = parser.parse_args(argv)
    rendered = {}
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        opened = len(re.findall(r"^<!-- table: ", text, re.M))
        if opened != len(BLOCK.findall(text)):
            print(f"{page.relative_to(root)}: a '<!-- table: ... -->' line without its '<!-- /table -->'",
                  file=sys.stderr)
            return 2
        try:
            new = render_page(text, root, link=page == root / "README.md")
        except RenderError as e:
            print(f"{page.relative_to(root)}: {e}", file=sys.stderr)
            return 2
        if new != text:
            rendered[page] = new
    stale = [page.relative_to(root) for page in rendered]
    if not args.check:
        for page, new in rendered.items():  # only once every page rendered: no half-done run
            page.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("stale tables (run python benchmarks/render.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    print("tables up to date" if args.check else f"rendered: {len(stale)} page(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
