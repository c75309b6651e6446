"""``rlad serve`` under load with hostile clients (prints figures; not a test).

An async aiohttp client drives the HTTP API with 1, 16 and 64 concurrent clients sending
``--rows``-row requests of test rows, ``--hostile`` of them hostile (beyond float32, float32's
edge, NaN, strings, wrong width, far outside the training range, malformed JSON), first with 1
replica and then 2 in the same run. Prints p50/p99 latency and rows/s of the good requests, and
how many good requests failed (must be 0) and hostile ones got a 4xx (must be all). The client
shares the machine with the server, so on few cores it competes with the replicas for CPU.

    python benchmarks/bench_serve_load.py --seconds 10
    python benchmarks/bench_serve_load.py --autoscale-seconds 60    # also: autoscaling 1..2 replicas
    python benchmarks/bench_serve_load.py --fuzz-examples 3000      # only a long HTTP fuzzing run
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = {  # name -> row mutation (a JSON fragment replacing one value) or a whole body
    "1e39": "1e39", "-3.4e38": "-3.4e38", "NaN": "NaN", "string": '"0.5"', "far outside training": "50.0",
    "huge int": "1" + "0" * 60, "wrong width": None, "malformed": None,
}


def hostile_body(kind: str, good: str) -> str:
    if kind == "wrong width":
        return '{"rows": [[0.1, 0.2]]}'
    if kind == "malformed":
        return good[: len(good) // 2]
    return '{"rows": [[' + HOSTILE[kind] + good[good.index(","):]  # replaces the first value


async def client(session: aiohttp.ClientSession, url: str, bodies: list[str], hostile_share: float, seed: int,
                 deadline: float, records: list[tuple[bool, int, float, bool]]) -> None:
    """One closed-loop client: a request, its answer, the next request."""
    rng = np.random.default_rng(seed)
    kinds = list(HOSTILE)
    while time.perf_counter() < deadline:
        body = bodies[rng.integers(len(bodies))]
        hostile = rng.random() < hostile_share
        if hostile:
            body = hostile_body(kinds[rng.integers(len(kinds))], body)
        t = time.perf_counter()
        try:
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
                out = await r.json(content_type=None)
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError):
            status, out = 0, None
        finite = status == 200 and all(np.isfinite(out["scores"])) and all(np.isfinite(out["proba"]))
        records.append((hostile, status, time.perf_counter() - t, finite))


async def load(url: str, bodies: list[str], clients: int, seconds: float, hostile_share: float) -> list[tuple]:
    records: list[tuple] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as session:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(client(session, url, bodies, hostile_share, i, deadline, records) for i in range(clients)))
    return records


async def autoscaled_load(url: str, bodies: list[str], seconds: float, hostile_share: float,
                          timeline: list[tuple[float, int]]) -> list[tuple]:
    """64 clients while the replica count is sampled every second into ``timeline``."""
    start = time.perf_counter()

    async def sample() -> None:
        while time.perf_counter() - start < seconds:
            timeline.append((time.perf_counter() - start, await asyncio.to_thread(running_replicas, "detector")))
            await asyncio.sleep(1.0)

    records, _ = await asyncio.gather(load(url, bodies, 64, seconds, hostile_share), sample())
    return records


def report(label: str, clients: int, records: list[tuple], seconds: float, rows: int) -> dict[str, float]:
    good = [r for r in records if not r[0]]
    hostile = [r for r in records if r[0]]
    ok = [r for r in good if r[1] == 200 and r[3]]
    latency = np.array([r[2] for r in ok]) * 1000
    row = {"good failed": len(good) - len(ok), "hostile 4xx": sum(400 <= r[1] < 500 for r in hostile),
           "hostile": len(hostile), "p50": np.percentile(latency, 50), "p99": np.percentile(latency, 99),
           "req/s": len(ok) / seconds, "rows/s": len(ok) * rows / seconds}
    print(f"{label:>10}{clients:>8}{len(good):>7}{row['good failed']:>7}{row['hostile 4xx']:>6}/{row['hostile']:<5}"
          f"{row['p50']:>9.1f}{row['p99']:>9.1f}{row['req/s']:>8.0f}{row['rows/s']:>9.0f}", flush=True)
    return row


def running_replicas(app: str) -> int:
    from ray import serve

    return serve.status().applications[app].deployments["DetectorServer"].replica_states.get("RUNNING", 0)


def wait_for_replicas(app: str, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while running_replicas(app) != n:
        if time.time() > deadline:
            raise RuntimeError(f"{app} did not reach {n} running replicas")
        time.sleep(0.5)


def fuzz(examples: int) -> int:
    """The HTTP fuzzing test with a longer budget (same seed-fixed strategies)."""
    t = time.perf_counter()
    env = {**os.environ, "RLAD_FUZZ_EXAMPLES": str(examples)}
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", str(ROOT / "tests/test_http_fuzz.py")],
                         cwd=ROOT, env=env)
    print(f"[fuzz] {examples} examples x 2 input policies: {'passed' if rc == 0 else 'FAILED'} "
          f"in {time.perf_counter() - t:.0f} s", flush=True)
    return rc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="thyroid", help="ADBench name or file of the test rows (default: thyroid)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64], help="concurrent clients per phase")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="replica counts, measured in this order")
    p.add_argument("--rows", type=int, default=64, help="rows per request (default: 64)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of load per phase (default: 10)")
    p.add_argument("--hostile", type=float, default=0.05, help="share of hostile requests (default: 0.05)")
    p.add_argument("--autoscale-seconds", type=float, default=0.0,
                   help="then autoscale 1..2 replicas under 64 clients for this long (default: skip)")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance (default: 2)")
    p.add_argument("--port", type=int, default=8131, help="HTTP port (default: 8131)")
    p.add_argument("--fuzz-examples", type=int, default=0, help="only run the HTTP fuzzing with this many examples")
    args = p.parse_args()
    if args.fuzz_examples:
        return fuzz(args.fuzz_examples)

    from ray import serve

    from rlad.algorithms.mamba_moe import MambaMoEDetector
    from rlad.core.data import SplitConfig, adbench_split, load_dataset, resolve_data
    from rlad.core.ray_init import init_ray
    from rlad.core.verbosity import quiet
    from rlad.platform.runtime.serving import ServeOptions, deploy_detector

    torch.set_num_threads(1)
    split = adbench_split(load_dataset(resolve_data(args.data)), SplitConfig(la=0.3))
    det = MambaMoEDetector(epochs=2).fit(split.X_train, split.y_train_semi)
    path = str(det.save(ROOT / "runs/bench_serve_load/detector.pt"))
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"rows": split.X_test[rng.integers(len(split.X_test), size=args.rows)].tolist()}) for _ in range(64)]
    quiet()  # our figures, not Ray's INFO lines
    init_ray(num_cpus=args.num_cpus)
    url = f"http://127.0.0.1:{args.port}/detector/score"
    print(f"[bench] Mamba-MoE on {split.name} ({split.n_features} features), {args.rows} rows/request, "
          f"{args.hostile:.0%} hostile, {args.seconds:g} s per phase, {os.cpu_count()} cores", flush=True)
    print(f"{'replicas':>10}{'clients':>8}{'good':>7}{'failed':>7}{'hostile 4xx':>12}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'req/s':>8}{'rows/s':>9}")
    failed = 0
    for n in args.replicas:
        deploy_detector(path, ServeOptions(num_replicas=n, num_cpus=1.0, route_prefix="/detector", http_port=args.port))
        wait_for_replicas("detector", n)
        asyncio.run(load(url, bodies, 4, 1.0, 0.0))  # warm-up
        for c in args.clients:
            row = report(str(n), c, asyncio.run(load(url, bodies, c, args.seconds, args.hostile)), args.seconds, args.rows)
            failed += row["good failed"] + row["hostile"] - row["hostile 4xx"]
    if args.autoscale_seconds:
        deploy_detector(path, ServeOptions(num_replicas=1, num_cpus=1.0, route_prefix="/detector", http_port=args.port))
        wait_for_replicas("detector", 1)
        deploy_detector(path, ServeOptions(num_replicas=1, max_replicas=2, num_cpus=1.0, route_prefix="/detector", http_port=args.port))
        timeline: list[tuple[float, int]] = []
        records = asyncio.run(autoscaled_load(url, bodies, args.autoscale_seconds, args.hostile, timeline))
        row = report("auto 1..2", 64, records, args.autoscale_seconds, args.rows)
        failed += row["good failed"] + row["hostile"] - row["hostile 4xx"]
        changes = [f"{n} at {t:.0f} s" for i, (t, n) in enumerate(timeline) if i == 0 or n != timeline[i - 1][1]]
        print(f"[bench] autoscaler, running replicas under 64 clients: {', '.join(changes)}", flush=True)
    serve.shutdown()
    print(f"[bench] {'OK: no good request failed, every hostile one got a 4xx' if failed == 0 else f'{failed} requests misanswered'}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
