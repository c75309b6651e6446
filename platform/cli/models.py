"""``rlad models list|show|promote|rollback --service DIR``: a service's model registry. Promote
and rollback are hot swaps: the serving replicas pick the new live version up within a second."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rlad.platform.cli.retrain import add_service


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, show, promote or roll back a served detector's versions")
    actions = p.add_subparsers(dest="action", required=True, help="list | show | promote | rollback")
    add_service(actions.add_parser("list", help="every version and the live one"))
    show = actions.add_parser("show", help="one version: metrics, data hash, parent, checkpoint, decisions")
    show.add_argument("version", type=int, help="the version to show")
    add_service(show)
    promote = actions.add_parser("promote", help="make a version live (hot swap)")
    promote.add_argument("version", type=int, help="the version to make live")
    promote.add_argument("--reason", default="manual promotion", help="recorded with the promotion")
    add_service(promote)
    rollback = actions.add_parser("rollback", help="serve an earlier version again (default: the one live before)")
    rollback.add_argument("version", type=int, nargs="?", default=None,
                          help="the version to serve again (default: the one live before the current)")
    rollback.add_argument("--reason", default="", help="recorded with the rollback")
    add_service(rollback)
    p.set_defaults(func=run)


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def run(args: argparse.Namespace) -> int:
    from rlad.platform.runtime.feedback import DB_NAME
    from rlad.platform.runtime.model_registry import ModelRegistry, RegistryError

    if not (Path(args.service) / DB_NAME).is_file():
        print(f"[models] error: {args.service} is not a service folder (no {DB_NAME}): rlad serve --workdir makes one")
        return 2
    with ModelRegistry(args.service) as registry:
        try:
            if args.action == "list":
                live = registry.live()
                print(f"{'':2}{'version':>7}  {'parent':>6}  {'created':19}  {'kind':10}  {'held-out AUC-PR':>15}  note")
                for v in registry.versions():
                    auc = v["metrics"].get("candidate_auc_pr")
                    print(f"{'*' if v['version'] == live else '':2}{v['version']:>7}  {v['parent'] or '-':>6}  "
                          f"{when(v['created'])}  {v['kind']:10}  {'-' if auc is None else f'{auc:.4f}':>15}  {v['note']}")
            elif args.action == "show":
                record = registry.get(args.version)
                record["live"] = registry.live() == args.version
                record["events"] = [e for e in registry.events(1000) if e["version"] == args.version]
                print(json.dumps(record, indent=2))
            elif args.action == "promote":
                registry.get(args.version)  # an unknown version is a RegistryError
                if registry.live() == args.version:
                    raise RegistryError(f"version {args.version} is already live")
                registry.promote(args.version, args.reason)
                print(f"[models] version {args.version} is live")
            else:
                version = registry.rollback(args.version, args.reason)
                print(f"[models] rolled back: version {version} is live")
        except RegistryError as exc:
            print(f"[models] error: {exc}")
            return 2
    return 0
