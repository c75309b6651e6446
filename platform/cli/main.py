"""``rlad`` command line. Each command lives in its own module of this package, which defines
``add_cli(subparsers)``: it adds a sub-parser and sets ``func=run(args) -> int`` on it. Modules keep
heavy imports (Ray, RLlib) inside ``run`` so that ``rlad --help`` stays fast."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = tuple(f"rlad.platform.cli.{name}" for name in ("swift_hydra", "dplan", "residual_rl", "serve", "bench", "tune"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlad", description="Train, evaluate and serve RL anomaly detectors on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
