"""``rlad`` command line. Each command lives in its own module of this package, which defines
``add_cli(subparsers)``: it adds a sub-parser and sets ``func=run(args) -> int`` on it. Modules keep
heavy imports (Ray, RLlib) inside ``run`` so that ``rlad --help`` stays fast."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = tuple(f"rlad.platform.cli.{name}" for name in ("fit", "score", "swift_hydra", "dplan", "residual_rl", "serve", "bench", "tune", "meta_rae", "retrain", "models"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlad", description="Train, evaluate and serve RL anomaly detectors on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    for command in sub.choices.values():
        command.add_argument("-v", "--verbose", action="store_true",
                             help="show Ray's, RLlib's and library log lines and warnings (default: our own progress only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; Ctrl-C ends it with exit code 130 (what finished is already on disk). A
    user's mistake (:class:`~rlad.core.errors.UserError`, or a command's own usage message) is one
    line on stderr and exit code 2; ``-v`` adds the traceback."""
    from rlad.core.errors import UserError
    from rlad.core.verbosity import quiet

    args = build_parser().parse_args(argv)
    quiet(not args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\n[rlad] {args.command} interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError) as exc:
        message = str(exc) if isinstance(exc, UserError) else f"{exc.filename}: no such file"
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        message = exc.code.removeprefix(f"rlad {args.command}: ")
    if args.verbose:
        import traceback

        traceback.print_exc()
    print(f"rlad {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
