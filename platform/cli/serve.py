"""``rlad serve``: serve a saved detector over HTTP (JSON in, scores out) until interrupted."""
from __future__ import annotations

import argparse
import ipaddress
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rlad.platform.cli.args import add_ray
from rlad.platform.runtime.feedback import DEFAULT_WINDOW

if TYPE_CHECKING:
    from rlad.platform.runtime.serving import ServeOptions

API_KEY_ENV = "RLAD_API_KEY"


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a saved detector over HTTP with Ray Serve")
    p.add_argument("checkpoint", help="detector checkpoint written by save()")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default: loopback only; any other address needs an API key or --insecure)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    p.add_argument("--route-prefix", default="/detector", help="URL prefix of the API (default: /detector)")
    p.add_argument("--replicas", type=int, default=1,
                   help="Serve replicas of the detector; the minimum when --max-replicas is given (default: 1)")
    p.add_argument("--max-replicas", type=int, default=None,
                   help="autoscale between --replicas and this many replicas as load grows (default: fixed count)")
    p.add_argument("--target-ongoing-requests", type=float, default=8.0,
                   help="ongoing requests per replica the autoscaler aims for (default: 8)")
    p.add_argument("--out-of-range", choices=("reject", "flag"), default="reject",
                   help="rows far outside the training range: reject with 422 naming the row and column, or score "
                        "them, mark them out_of_range and predict them anomalous (default: reject)")
    p.add_argument("--range-margin", type=float, default=1.0,
                   help="accepted range per feature: training [min - K*span, max + K*span] (default: K=1)")
    p.add_argument("--api-key-file", default=None,
                   help=f"file holding the API key clients must send in X-API-Key (default: the {API_KEY_ENV} "
                        "environment variable; no key if neither is set)")
    p.add_argument("--workdir", default=None,
                   help="the service's folder: rlad.db (scored rows, feedback, model registry) and model versions "
                        "(default: CHECKPOINT.service/ beside the checkpoint)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"scored rows kept for feedback by id, the newest this many (default: {DEFAULT_WINDOW})")
    p.add_argument("--training-data", default=None,
                   help="the table the checkpoint was trained on (as given to rlad fit --data): rlad retrain refits "
                        "on it plus the analysts' feedback")
    p.add_argument("--label-column", default=None, help="with --training-data: its label column (as for rlad fit)")
    p.add_argument("--id-column", default=None, help="with --training-data: its id column (as for rlad fit)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without an API key")
    add_ray(p)
    p.set_defaults(func=run)


def read_api_key(key_file: str | None) -> str | None:
    """The API key from ``key_file`` (surrounding whitespace stripped), else from ``$RLAD_API_KEY``."""
    if key_file is not None:
        try:
            key, source = Path(key_file).read_text().strip(), key_file
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read API key file {key_file}: {exc}") from exc
    elif os.environ.get(API_KEY_ENV) is not None:
        key, source = os.environ[API_KEY_ENV].strip(), f"${API_KEY_ENV}"
    else:
        return None
    if len(key) < 16 or not key.isascii() or not key.isprintable() or " " in key:
        raise ValueError(f"the API key in {source} must be at least 16 printable ASCII characters without spaces")
    return key


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def run(args: argparse.Namespace) -> int:
    from rlad.platform.runtime.http_api import hash_api_key
    from rlad.platform.runtime.screening import InputPolicy
    from rlad.platform.runtime.serving import ServeOptions

    try:
        key = read_api_key(args.api_key_file)
        if args.window < 1:
            raise ValueError(f"--window must be at least 1, got {args.window}")
        options = ServeOptions(num_replicas=args.replicas, max_replicas=args.max_replicas,
                               target_ongoing_requests=args.target_ongoing_requests, route_prefix=args.route_prefix,
                               http_host=args.host, http_port=args.port,
                               input_policy=InputPolicy(args.out_of_range, args.range_margin),
                               api_key_sha256=None if key is None else hash_api_key(key),
                               workdir=str(Path(args.workdir or f"{args.checkpoint}.service").resolve()),
                               window=args.window)
    except ValueError as exc:
        print(f"[serve] error: {exc}", flush=True)
        return 2
    if key is None and not is_loopback(args.host) and not args.insecure:
        print(f"[serve] error: refusing to serve on {args.host} without an API key: anyone who can reach it could "
              f"score. Set {API_KEY_ENV} or --api-key-file, or pass --insecure.", flush=True)
        return 2
    return serve_forever(args, options, key is not None)


def register(args: argparse.Namespace, workdir: str) -> tuple[int, str]:
    """The live version to serve from the service's registry (``args.checkpoint`` registered and
    made live if new; a restart keeps serving what was promoted since)."""
    from rlad.platform.runtime.model_registry import ModelRegistry, save_training_rows

    training = hashed = None
    if args.training_data:
        from rlad.platform.cli.fit import read_training_rows

        fit_args = argparse.Namespace(data=args.training_data, label_column=args.label_column, id_column=args.id_column,
                                      skip_bad_rows=True)
        X, y, _, _ = read_training_rows(fit_args)
        training, hashed = save_training_rows(workdir, X, y)
    with ModelRegistry(workdir) as registry:
        version, checkpoint, what = registry.serve(args.checkpoint, training, hashed)
    print(f"[serve] {workdir}: {what}", flush=True)
    return version, checkpoint


def serve_forever(args: argparse.Namespace, options: ServeOptions, authenticated: bool) -> int:
    from pathlib import Path

    from rlad.core.errors import UserError

    if not Path(args.checkpoint).is_file():  # one message before torch, Ray and Serve load
        raise UserError(f"checkpoint {args.checkpoint} does not exist")

    from rlad.algorithms.registry import load_detector
    from rlad.core.ray_init import init_ray
    from rlad.platform.runtime.serving import deploy_detector

    load_detector(args.checkpoint)  # a bad checkpoint is one message here, before Ray starts
    version, checkpoint = register(args, options.workdir)
    init_ray(num_cpus=args.num_cpus, address=args.address)
    deploy_detector(checkpoint, options, version=version)
    base = f"http://{args.host}:{args.port}{args.route_prefix}"
    auth = "X-API-Key required" if authenticated else "no API key"
    print(f"[serve] POST {base}/score  GET {base}/info  triage page {base}/ui/  OpenAPI {base}/openapi.json  ({auth}; Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
