"""``rlad serve``: serve a saved detector over HTTP (JSON in, scores out) until interrupted."""
from __future__ import annotations

import argparse
import time

from rlad.platform.cli.args import add_ray


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a saved detector over HTTP with Ray Serve")
    p.add_argument("checkpoint", help="detector checkpoint written by save()")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    p.add_argument("--route-prefix", default="/detector", help="URL prefix of the API (default: /detector)")
    p.add_argument("--replicas", type=int, default=1, help="Serve replicas of the detector (default: 1)")
    add_ray(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlad.platform.core.ray_init import init_ray
    from rlad.platform.runtime.serving import ServeOptions, deploy_detector

    init_ray(num_cpus=args.num_cpus, address=args.address)
    options = ServeOptions(num_replicas=args.replicas, route_prefix=args.route_prefix, http_host=args.host, http_port=args.port)
    deploy_detector(args.checkpoint, options)
    base = f"http://{args.host}:{args.port}{args.route_prefix}"
    print(f"[serve] POST {base}/score  GET {base}/info  OpenAPI {base}/openapi.json  (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
