"""mkdocs hook: lay out pyproject's package-dir mapping as links so mkdocstrings finds ``rlad.*``.

rlad is one import namespace over fixed top-level folders (``rlad.core`` is ``platform/core``,
``rlad.algorithms`` is ``algorithms``, ...). griffe reads packages from folders named like their
import path, so this writes ``build/api_sources/rlad/<name>`` links from the mapping in
pyproject.toml (the one place it is written) before mkdocstrings loads anything.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority


@event_priority(100)  # before mkdocstrings reads its `paths`
def on_config(config):
    root = Path(config.config_file_path).resolve().parent
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = root / "build" / "api_sources" / "rlad"
    top.mkdir(parents=True, exist_ok=True)
    for name, folder in mapping.items():
        parts = name.split(".")
        if len(parts) != 2 or parts[0] != "rlad":
            continue
        link = top / parts[1]
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(root / folder, link, target_is_directory=True)
    return config
