"""The README stays short, and every results table in README.md and docs/ matches its CSV."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("render", ROOT / "benchmarks" / "render.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


def test_readme_fits_in_150_lines():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150


def test_rendered_tables_are_up_to_date():
    assert render.main(["--check"]) == 0


def test_render_fills_filters_and_detects_stale_tables(tmp_path, capsys):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "results" / "x.csv").write_text("arm,seeds,AUC\na,0-2,0.9\nb,0-2,0.8\na,3-5,0.7\n")
    (tmp_path / "benchmarks" / "results" / "x.source.md").write_text("python bench.py, 2026-11-29\n")
    block = '<!-- table: benchmarks/results/x.csv rows="seeds:3-5" cols="arm,AUC" -->\n<!-- /table -->\n'
    (tmp_path / "README.md").write_text("# t\n" + block)
    (tmp_path / "docs" / "p.md").write_text("<!-- table: benchmarks/results/x.csv -->\nstale\n<!-- /table -->\n")
    assert render.main(["--check"], root=tmp_path) == 1
    assert render.main([], root=tmp_path) == 0
    assert render.main(["--check"], root=tmp_path) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "| arm | AUC |" in readme and "| a | 0.7 |" in readme and "0.9" not in readme
    assert "Source: [`benchmarks/results/x.csv`](benchmarks/results/x.csv): python bench.py, 2026-11-29" in readme
    assert "| b | 0-2 | 0.8 |" in (tmp_path / "docs" / "p.md").read_text()
    (tmp_path / "benchmarks" / "results" / "x.csv").write_text("arm,seeds,AUC\na,3-5,0.75\n")
    assert render.main(["--check"], root=tmp_path) == 1
    assert "README.md" in capsys.readouterr().err
    (tmp_path / "docs" / "p.md").write_text("<!-- table: benchmarks/results/missing.csv -->\n<!-- /table -->\n")
    assert render.main([], root=tmp_path) == 2
