"""``rlad bench``: registered detectors x ADBench-format datasets x la x seeds, as Ray tasks.

Exit codes: 0 every run succeeded; 1 the benchmark completed and wrote its results but some runs
(or the report) failed (see the ``error`` column and ``errors.log``); 2 bad request (unknown detector, bad config,
no data files).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from rlad.platform.cli.args import add_data, add_ray


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark detectors over ADBench-format datasets (Ray tasks), write CSV/Parquet and a report",
        description="Run every (detector, dataset, la, seed) with the ADBench protocol as parallel Ray tasks; "
                    "write results.csv, results.parquet, curves.parquet, report.md and report.html. Detectors that use "
                    "Ray themselves (swift_hydra, dplan, residual_rl) run in the driver, one at a time, after the tasks.",
    )
    p.add_argument("--detectors", nargs="+", required=True, metavar="NAME",
                   help="registered detectors; LABEL=NAME benchmarks a variant under its own label")
    add_data(p, nargs="+")
    p.add_argument("--la", nargs="+", type=float, default=[0.1], help="fractions of training anomalies labelled")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="split and detector seeds")
    p.add_argument("--out", default="results/bench", help="output folder")
    p.add_argument("--config", default=None, help="YAML: {detector label or name: {option: value, ...}, ...}")
    p.add_argument("--detector-config", nargs="+", default=[], metavar="NAME.KEY=VALUE",
                   help="override one option (VALUE parsed as YAML; nested keys with dots), e.g. mamba_moe.epochs=5")
    p.add_argument("--id-column", default=None, help="CSV/Parquet: column of row ids, not a feature (as in rlad fit)")
    p.add_argument("--label-column", default=None, help="CSV/Parquet: column of labels (default: 'y' or 'label')")
    p.add_argument("--split", default=None,
                   help="usual (default: BenchConfig.split): ADBench's split; unseen-types: the labels show one anomaly "
                        "type (a k-means cluster), the test holds the other (data sets without one are skipped)")
    p.add_argument("--max-rows", type=int, default=10_000, help="subsample larger datasets (stratified)")
    p.add_argument("--cpus-per-task", type=float, default=1, help="CPUs reserved by each Ray task")
    p.add_argument("--in-driver", nargs="*", default=None, metavar="NAME",
                   help="detectors run in the driver sequentially (default: swift_hydra dplan residual_rl)")
    add_ray(p)
    p.add_argument("--resume", action="store_true", help="skip runs already recorded without error in OUT/runs.jsonl")
    p.add_argument("--no-report", action="store_true", help="results only, no report/figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["mamba_moe.epochs=5", "swift_hydra.detector.epochs=2"]`` -> nested dicts by detector."""
    import yaml

    from rlad.core.config import set_dotted
    from rlad.platform.runtime.sweep.runs import BenchError

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, option = key.partition(".")
        if not sep or not dot or not name or not option:
            raise BenchError(f"bad --detector-config {item!r}; use NAME.KEY=VALUE")
        try:
            set_dotted(out.setdefault(name, {}), option, yaml.safe_load(value))
        except ValueError as exc:
            raise BenchError(f"bad --detector-config {item!r}: {exc}") from None
    return out


def run(args: argparse.Namespace) -> int:
    from rlad.core.config import deep_merge, load_yaml
    from rlad.core.ray_init import init_ray
    from rlad.algorithms.registry import RAY_DETECTORS
    from rlad.platform.runtime.sweep.runs import BenchConfig, BenchError, find_data_files, resolve_detectors, run_bench

    try:
        configs = load_yaml(args.config) if args.config else {}
        if not isinstance(configs, dict) or not all(isinstance(v, dict) or v is None for v in configs.values()):
            raise BenchError(f"{args.config}: expected a mapping of detector -> mapping of options")
        for name, options in parse_overrides(args.detector_config).items():
            configs[name] = deep_merge(configs.get(name) or {}, options)
        specs = resolve_detectors(args.detectors, configs)
        cfg = BenchConfig(
            la=tuple(args.la), seeds=tuple(args.seeds), max_rows=args.max_rows, cpus_per_task=args.cpus_per_task,
            in_driver=frozenset(args.in_driver) if args.in_driver is not None else RAY_DETECTORS,
            progress=not args.no_progress, id_column=args.id_column, label_column=args.label_column,
            **({"split": args.split} if args.split is not None else {}),
        )
        if any(not 0.0 <= la <= 1.0 for la in cfg.la):
            raise BenchError(f"--la values must be in [0, 1], got {list(cfg.la)}")
        find_data_files(args.data)  # fail before starting Ray
    except (BenchError, OSError) as exc:
        print(f"rlad bench: error: {exc}", file=sys.stderr)
        return 2

    import ray

    started_ray = not ray.is_initialized()
    init_ray(num_cpus=args.num_cpus, address=args.address)
    try:
        result = run_bench(specs, args.data, cfg, out_dir=args.out, resume=args.resume, report=not args.no_report)
    except BenchError as exc:  # found once the output folder is read (resume on another split)
        print(f"rlad bench: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if started_ray:
            ray.shutdown()
    for key in ("csv", "parquet", "curves", "report_md", "report_html"):
        if key in result.files:
            print(f"[bench] {key}: {result.files[key]}")
    if result.report_error:
        print(f"[bench] the report failed: {result.report_error}", file=sys.stderr)
    if result.n_failed or result.report_error:
        print(f"[bench] {result.n_failed} of {len(result.results)} run(s) failed; see {result.files['errors']}", file=sys.stderr)
        return 1
    return 0
