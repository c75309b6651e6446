"""mkdocs hook: serve the benchmarks' figures (``benchmarks/results/*.png``) at ``results/NAME.png``
on the site, so a page shows the PNG a benchmark wrote, with no copy under ``docs/`` to go stale."""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File


def on_files(files, config):
    results = Path(config.config_file_path).resolve().parent / "benchmarks" / "results"
    for png in sorted(results.glob("*.png")):
        files.append(File.generated(config, f"results/{png.name}", abs_src_path=str(png)))
    return files
