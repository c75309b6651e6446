"""Benchmark: any registered detectors over any ADBench-format files, with ADBench's protocol.

One *run* is one ``(detector, dataset, la, seed)``: split the dataset with
:func:`rlad.platform.data.adbench_split` (``SplitConfig(la=la, seed=seed, max_rows=...)``), fit
the detector on the training rows with the semi-supervised labels ``y_train_semi``, score the
test rows, record AUC-ROC / AUC-PR, fit and score wall times and the ROC and PR curve points.

Runs execute in parallel as Ray tasks (``cpus_per_task`` CPUs each, default 1). A run that raises
returns a row whose ``error`` column holds ``"ExcType: message"`` (full traceback in
``errors.log``); a worker that dies (OOM kill, segfault) is retried ``max_retries`` times and then
recorded the same way. Nothing a detector does stops the other runs.

Detectors that use Ray themselves (:data:`RAY_DETECTORS`: Swift Hydra builds RLlib env runners
and a Serve deployment, DPLAN and Residual-RL build RLlib algorithms) must not run inside a task:
their actors ask the cluster for CPUs that the benchmark's own tasks hold, and a task blocked
waiting for them can deadlock the cluster. They run in the driver instead, one at a time, *after*
every parallel task has finished, so the whole cluster is free for their actors. Any other
detector can be sent to the driver with ``in_driver``.

Every finished run is appended at once to ``runs.jsonl`` in the output folder, so a crashed or
interrupted benchmark loses nothing; ``resume=True`` skips runs already recorded there without
error. Outputs (see :func:`run_bench`): ``results.csv``, ``results.parquet`` (one row per run,
:data:`RESULT_COLUMNS`), ``curves.parquet`` (long format: detector, dataset, la, seed, curve
``"roc"``/``"pr"``, point, x, y), ``bench_config.json`` and ``errors.log``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from rlad.platform.data import SUFFIXES, DatasetError, SplitConfig, TabularDataset, adbench_split, load_dataset

#: Registered detectors that start Ray actors themselves; they run in the driver, sequentially.
RAY_DETECTORS = frozenset({"swift_hydra", "dplan", "residual_rl"})

#: Columns of ``results.csv`` / ``results.parquet``, one row per run.
RESULT_COLUMNS = [
    "detector", "kind", "dataset", "la", "seed", "auc_roc", "auc_pr", "fit_s", "score_s",
    "n_train", "n_test", "n_features", "n_labeled", "ran_in", "error",
]
CURVE_COLUMNS = ["detector", "dataset", "la", "seed", "curve", "point", "x", "y"]
SEED_FIELDS = ("seed", "random_state", "random_seed")


class BenchError(ValueError):
    """A benchmark request that cannot run: unknown detector, bad config, no data files."""


# -- detectors ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorSpec:
    """One benchmarked detector: ``label`` (its name in the results), the registry ``kind`` and
    config overrides over the registry defaults (nested dicts for nested configs; the key
    ``contamination`` goes to the constructor, not the config)."""

    label: str
    kind: str
    config: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int | None = None) -> Any:
        """A fresh detector; ``seed`` fills the config's ``seed``/``random_state``/``random_seed``
        field unless the overrides set it."""
        from rlad.algorithms.registry import get_detector_class
        from rlad.platform.config import from_dict

        cls = get_detector_class(self.kind)
        options = dict(self.config)
        contamination = float(options.pop("contamination", 0.1))
        if seed is not None:
            names = {f.name for f in dataclasses.fields(cls.Config)}
            for name in SEED_FIELDS:
                if name in names and name not in options:
                    options[name] = int(seed)
        return cls(from_dict(cls.Config, options), contamination=contamination)


def parse_detector(text: str) -> tuple[str, str]:
    """``"iforest"`` -> ``("iforest", "iforest")``; ``"if50=iforest"`` -> ``("if50", "iforest")``
    (a label lets one kind appear several times with different configs)."""
    label, sep, kind = text.partition("=")
    if not sep:
        kind = label
    label, kind = label.strip(), kind.strip()
    if not label or not kind:
        raise BenchError(f"bad detector {text!r}; use NAME or LABEL=NAME")
    return label, kind


def set_nested(options: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_nested(d, "detector.epochs", 2)`` sets ``d["detector"]["epochs"] = 2``."""
    *parents, last = dotted.split(".")
    for key in parents:
        options = options.setdefault(key, {})
        if not isinstance(options, dict):
            raise BenchError(f"config key {dotted!r}: {key!r} is not a nested section")
    options[last] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_detectors(names: Sequence[str], configs: dict[str, dict[str, Any]] | None = None) -> list[DetectorSpec]:
    """Detector specs from names (``NAME`` or ``LABEL=NAME``) and per-detector overrides keyed by
    label (or by kind, applied first, for every label of that kind). Every config is validated
    here (unknown keys, wrong nesting) so that a typo fails before any run starts."""
    from rlad.algorithms.registry import list_detectors

    configs = configs or {}
    specs: list[DetectorSpec] = []
    for text in names:
        label, kind = parse_detector(text)
        if kind not in list_detectors():
            raise BenchError(f"unknown detector {kind!r}; registered: {', '.join(list_detectors())}")
        if label in {s.label for s in specs}:
            raise BenchError(f"detector {label!r} given twice; use LABEL=NAME to benchmark variants")
        options = _merge(dict(configs.get(kind) or {}), dict(configs.get(label) or {}) if label != kind else {})
        spec = DetectorSpec(label, kind, options)
        try:
            spec.build()
        except (TypeError, ValueError) as exc:
            raise BenchError(f"detector {label!r} ({kind}): bad config {options}: {exc}") from exc
        specs.append(spec)
    unused = set(configs) - {s.label for s in specs} - {s.kind for s in specs}
    if unused:
        raise BenchError(f"config given for detector(s) not benchmarked: {sorted(unused)}")
    return specs


# -- data -----------------------------------------------------------------------------------------
def find_data_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files given directly, plus every ``.npz``/``.parquet``/``.pq``/``.csv`` of given folders
    (not recursive; other files such as READMEs are skipped). Dataset names (file stems) must be
    unique."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix in SUFFIXES and f.is_file()))
        elif p.exists():
            files.append(p)
        else:
            raise BenchError(f"{p}: no such file or folder")
    if not files:
        raise BenchError(f"no dataset files ({', '.join(SUFFIXES)}) in {[str(p) for p in paths]}")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise BenchError(f"two datasets named {f.stem!r}: {stems[f.stem]} and {f}")
        stems[f.stem] = f
    return files


# -- one run --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchConfig:
    """Protocol and execution settings of a benchmark."""

    la: tuple[float, ...] = (0.1,)
    seeds: tuple[int, ...] = (0,)
    max_rows: int = 10_000
    test_size: float = 0.3
    cpus_per_task: float = 1
    in_driver: frozenset[str] = RAY_DETECTORS  # kinds or labels run in the driver
    max_retries: int = 1
    curve_points: int = 200
    progress: bool = True


def _thin(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points, evenly spaced along the curve, keeping both ends."""
    if len(x) <= n:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, n).round().astype(int))
    return x[idx], y[idx]


def curve_points(y_true: np.ndarray, scores: np.ndarray, max_points: int = 200) -> dict[str, tuple[list[float], list[float]]]:
    """ROC (x = FPR, y = TPR) and PR (x = recall, y = precision) points, thinned to ``max_points``."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y_true, scores)
    precision, recall, _ = precision_recall_curve(y_true, scores)
    rx, ry = _thin(fpr, tpr, max_points)
    px, py = _thin(recall[::-1], precision[::-1], max_points)  # recall ascending
    return {"roc": (rx.tolist(), ry.tolist()), "pr": (px.tolist(), py.tolist())}


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 2000 else text[:2000] + " ..."


def run_one(spec: DetectorSpec, ds: TabularDataset, la: float, seed: int, cfg: BenchConfig, ran_in: str = "task") -> dict[str, Any]:
    """One run, in this process. Never raises: failures come back as a record with ``error``
    (and ``traceback``) set and NaN metrics."""
    row: dict[str, Any] = {c: None for c in RESULT_COLUMNS}
    row.update(detector=spec.label, kind=spec.kind, dataset=ds.name, la=float(la), seed=int(seed), ran_in=ran_in,
               auc_roc=math.nan, auc_pr=math.nan, fit_s=math.nan, score_s=math.nan, n_features=ds.n_features)
    record: dict[str, Any] = {"row": row, "curves": None, "traceback": None}
    try:
        from rlad.platform.metrics import auc_scores

        split = adbench_split(ds, SplitConfig(test_size=cfg.test_size, max_rows=cfg.max_rows, la=la, seed=seed))
        row.update(n_train=len(split.X_train), n_test=len(split.X_test), n_labeled=int(split.y_train_semi.sum()))
        detector = spec.build(seed)
        start = time.perf_counter()
        detector.fit(split.X_train, split.y_train_semi)
        row["fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = np.asarray(detector.decision_function(split.X_test), dtype=np.float64)
        row["score_s"] = time.perf_counter() - start
        if scores.shape != (len(split.X_test),) or not np.isfinite(scores).all():
            raise ValueError(f"detector returned {scores.shape} scores with {int((~np.isfinite(scores)).sum())} non-finite")
        row.update(auc_scores(split.y_test, scores))
        record["curves"] = curve_points(split.y_test, scores, cfg.curve_points)
    except Exception as exc:  # noqa: BLE001 -- a failing run is a result, not a crash
        row["error"] = _error_text(exc)
        record["traceback"] = traceback.format_exc()
    return record


def _task(spec: DetectorSpec, ds: TabularDataset, la: float, seed: int, cfg: BenchConfig) -> dict[str, Any]:
    import torch

    torch.set_num_threads(max(1, int(cfg.cpus_per_task)))  # no oversubscription among parallel tasks
    return run_one(spec, ds, la, seed, cfg, ran_in="task")


def _failed(spec: DetectorSpec, dataset: str, la: float, seed: int, ran_in: str, exc: BaseException, tb: str | None = None) -> dict[str, Any]:
    row = {c: None for c in RESULT_COLUMNS}
    row.update(detector=spec.label, kind=spec.kind, dataset=dataset, la=float(la), seed=int(seed), ran_in=ran_in,
               auc_roc=math.nan, auc_pr=math.nan, fit_s=math.nan, score_s=math.nan, error=_error_text(exc))
    return {"row": row, "curves": None, "traceback": tb or "".join(traceback.format_exception(exc))}


# -- results --------------------------------------------------------------------------------------
def run_key(row: dict[str, Any]) -> tuple[str, str, float, int]:
    return (row["detector"], row["dataset"], float(row["la"]), int(row["seed"]))


def results_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame([r["row"] for r in records], columns=RESULT_COLUMNS)
    for c in ("la", "auc_roc", "auc_pr", "fit_s", "score_s"):
        df[c] = df[c].astype("float64")
    for c in ("seed", "n_train", "n_test", "n_features", "n_labeled"):
        df[c] = df[c].astype("Int64")
    df["error"] = df["error"].astype("string")
    return df.sort_values(["dataset", "la", "seed", "detector"], kind="stable").reset_index(drop=True)


def curves_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    parts = []
    for r in records:
        if not r.get("curves"):
            continue
        row = r["row"]
        for curve, (x, y) in r["curves"].items():
            n = len(x)
            parts.append(pd.DataFrame({
                "detector": [row["detector"]] * n, "dataset": [row["dataset"]] * n, "la": [float(row["la"])] * n,
                "seed": [int(row["seed"])] * n, "curve": [curve] * n, "point": np.arange(n), "x": x, "y": y,
            }))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(CURVE_COLUMNS, ["object", "object", "float64", "int64", "object", "int64", "float64", "float64"])})
    return pd.concat(parts, ignore_index=True)


@dataclass
class BenchResult:
    results: pd.DataFrame
    curves: pd.DataFrame
    out_dir: Path
    files: dict[str, Path]
    report_error: str | None = None

    @property
    def n_failed(self) -> int:
        return int(self.results["error"].notna().sum())


def read_runs(path: Path) -> list[dict[str, Any]]:
    """Records of a ``runs.jsonl`` (a truncated last line, from a crash mid-write, is skipped)."""
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


# -- the benchmark --------------------------------------------------------------------------------
def run_bench(
    detectors: Sequence[DetectorSpec],
    data: Sequence[str | os.PathLike],
    cfg: BenchConfig = BenchConfig(),
    out_dir: str | os.PathLike = "results/bench",
    resume: bool = False,
    report: bool = True,
    log: Callable[[str], None] = print,
) -> BenchResult:
    """Run every ``(detector, dataset, la, seed)`` and write the results (and, with ``report``,
    ``report.md``/``report.html`` with figures, see :mod:`rlad.platform.report`) to ``out_dir``.

    Needs a running Ray (``rlad.platform.ray_runtime.init_ray``) when any run goes to a task."""
    import ray
    from tqdm.auto import tqdm

    if not detectors:
        raise BenchError("no detectors to benchmark")
    files = find_data_files(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.jsonl"

    done: dict[tuple, dict[str, Any]] = {}
    if resume:
        for r in read_runs(runs_path):
            if r["row"].get("error") is None:
                done[run_key(r["row"])] = r
        log(f"[bench] resuming: {len(done)} successful run(s) already in {runs_path}")
    else:
        runs_path.write_text("")

    started = time.time()
    (out / "bench_config.json").write_text(json.dumps({
        "detectors": [dataclasses.asdict(s) for s in detectors], "data": [str(f) for f in files],
        "protocol": dataclasses.asdict(cfg), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=2, default=_json_default))

    in_driver = lambda s: s.kind in cfg.in_driver or s.label in cfg.in_driver  # noqa: E731
    new: list[dict[str, Any]] = []
    errors_log = open(out / "errors.log", "a" if resume else "w")

    def record(r: dict[str, Any]) -> None:
        new.append(r)
        with open(runs_path, "a") as f:
            f.write(json.dumps(r, default=_json_default) + "\n")
        if r["row"]["error"] is not None:
            errors_log.write(f"== {r['row']['detector']} on {r['row']['dataset']} la={r['row']['la']} seed={r['row']['seed']}\n"
                             f"{r.get('traceback') or r['row']['error']}\n")
            errors_log.flush()

    todo_task: list[tuple[DetectorSpec, str, Any, float, int]] = []
    todo_driver: list[tuple[DetectorSpec, str, Any, float, int]] = []
    datasets: dict[str, TabularDataset] = {}
    unreadable = 0
    for path in files:
        pending = [(s, la, seed) for s in detectors for la in cfg.la for seed in cfg.seeds
                   if (s.label, path.stem, float(la), int(seed)) not in done]
        if not pending:
            continue
        try:
            ds = load_dataset(path)
        except DatasetError as exc:
            unreadable += 1
            log(f"[bench] {exc}")
            for s, la, seed in pending:
                record(_failed(s, path.stem, la, seed, "driver", exc))
            continue
        datasets[ds.name] = ds
        for s, la, seed in pending:
            (todo_driver if in_driver(s) else todo_task).append((s, ds.name, None, float(la), int(seed)))

    total = len(todo_task) + len(todo_driver)
    log(f"[bench] {len(detectors)} detector(s) x {len(files)} dataset(s) x {len(cfg.la)} la x {len(cfg.seeds)} seed(s): "
        f"{total} run(s) to do ({len(todo_task)} as Ray tasks, {len(todo_driver)} in the driver)"
        + (f"; {unreadable} unreadable dataset(s) recorded as failed" if unreadable else ""))
    bar = tqdm(total=total, desc="bench", unit="run", disable=not cfg.progress, dynamic_ncols=True)

    def tick(r: dict[str, Any]) -> None:
        row = r["row"]
        bar.set_postfix_str(f"{row['detector']}/{row['dataset']}: " + ("FAILED" if row["error"] else f"roc {row['auc_roc']:.3f}"))
        bar.update(1)

    try:
        if todo_task:
            if not ray.is_initialized():
                raise BenchError("Ray is not running: call rlad.platform.ray_runtime.init_ray() first")
            remote = ray.remote(_task).options(num_cpus=cfg.cpus_per_task, max_retries=cfg.max_retries)
            refs = {name: ray.put(ds) for name, ds in datasets.items() if any(t[1] == name for t in todo_task)}
            pending_refs = {}
            for s, name, _, la, seed in todo_task:
                pending_refs[remote.remote(s, refs[name], la, seed, cfg)] = (s, name, la, seed)
            while pending_refs:
                ready, _ = ray.wait(list(pending_refs), num_returns=1)
                for ref in ready:
                    s, name, la, seed = pending_refs.pop(ref)
                    try:
                        r = ray.get(ref)
                    except Exception as exc:  # worker died, object lost, ...: record and go on
                        r = _failed(s, name, la, seed, "task", exc)
                    record(r)
                    tick(r)
        for s, name, _, la, seed in todo_driver:
            r = run_one(s, datasets[name], la, seed, cfg, ran_in="driver")
            record(r)
            tick(r)
    finally:
        bar.close()
        errors_log.close()

    merged = dict(done)
    for r in new:
        merged[run_key(r["row"])] = r
    records = list(merged.values())
    result = BenchResult(results_frame(records), curves_frame(records), out, {})
    result.files = write_results(result.results, result.curves, out)
    cfg_path = out / "bench_config.json"
    meta = json.loads(cfg_path.read_text())
    meta.update(finished=time.strftime("%Y-%m-%d %H:%M:%S"), wall_s=round(time.time() - started, 3),
                n_runs=len(result.results), n_failed=result.n_failed)
    cfg_path.write_text(json.dumps(meta, indent=2, default=_json_default))
    result.files["config"] = cfg_path
    result.files["runs"] = runs_path
    result.files["errors"] = out / "errors.log"
    if report:  # results are on disk already: a report failure is logged, not raised
        from rlad.platform.report import write_report

        try:
            result.files.update(write_report(result.results, result.curves, out, meta=meta))
        except Exception as exc:  # noqa: BLE001
            result.report_error = _error_text(exc)
            with open(out / "errors.log", "a") as f:
                f.write(f"== report\n{traceback.format_exc()}\n")
            log(f"[bench] report failed ({result.report_error}); results are complete, see {out / 'errors.log'}")
    log(f"[bench] {len(result.results)} run(s), {result.n_failed} failed, in {time.time() - started:.1f}s; results in {out}")
    return result


def write_results(results: pd.DataFrame, curves: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """``results.csv``, ``results.parquet`` and ``curves.parquet``, each written atomically."""
    files = {"csv": out_dir / "results.csv", "parquet": out_dir / "results.parquet", "curves": out_dir / "curves.parquet"}
    for key, path in files.items():
        tmp = path.with_name(path.name + ".tmp")
        if key == "csv":
            results.to_csv(tmp, index=False)
        else:
            (results if key == "parquet" else curves).to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return files
