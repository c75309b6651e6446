"""Benchmark: any registered detectors over any ADBench-format files, with ADBench's protocol.

One *run* is one ``(detector, dataset, la, seed)``: split the dataset with
:func:`rlad.core.data.adbench_split` (``SplitConfig(la=la, seed=seed, max_rows=...)``; with
``split="unseen-types"``, then :func:`rlad.core.data.unseen_type_split`: the labels show one
anomaly type, the test holds another), fit the detector on the training rows with the
semi-supervised labels ``y_train_semi``, score the test rows, record AUC-ROC / AUC-PR, fit and
score wall times and the ROC and PR curve points. A ``(dataset, la, seed)`` without a second
anomaly type to hold out is skipped, logged and listed in ``bench_config.json``, not failed.

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

This module plans the runs and dispatches them; :mod:`.store` records them (``runs.jsonl``,
appended as runs finish, so ``resume=True`` skips runs already recorded without error; the
result tables) and :mod:`.report` writes the report.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from rlad.core.errors import UserError
from rlad.algorithms.registry import RAY_DETECTORS, build_detector, list_detectors
from rlad.core.config import deep_merge
from rlad.core.data import (
    SUFFIXES, UNSEEN_NEEDS, DatasetError, Split, SplitConfig, TabularDataset, adbench_split, load_dataset, resolve_data,
    unseen_type_split,
)
from rlad.core.metrics import auc_scores
from rlad.platform.runtime.sweep.store import (
    BenchResult, RunStore, curve_points, curves_frame, empty_record, fail, json_default, results_frame, write_results,
)



class BenchError(UserError, ValueError):
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
        """A fresh detector seeded with ``seed`` (see :func:`build_detector`)."""
        options = dict(self.config)
        return build_detector(self.kind, options, seed=seed, contamination=float(options.pop("contamination", 0.1)))


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


def resolve_detectors(names: Sequence[str], configs: dict[str, dict[str, Any]] | None = None) -> list[DetectorSpec]:
    """Detector specs from names (``NAME`` or ``LABEL=NAME``) and per-detector overrides keyed by
    label (or by kind, applied first, for every label of that kind). Every config is validated
    here (unknown keys, wrong nesting) so that a typo fails before any run starts."""
    configs = configs or {}
    specs: list[DetectorSpec] = []
    for text in names:
        label, kind = parse_detector(text)
        if kind not in list_detectors():
            raise BenchError(f"unknown detector {kind!r}; registered: {', '.join(list_detectors())}")
        if label in {s.label for s in specs}:
            raise BenchError(f"detector {label!r} given twice; use LABEL=NAME to benchmark variants")
        options = deep_merge(dict(configs.get(kind) or {}), dict(configs.get(label) or {}) if label != kind else {})
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
    """Files given directly or as ADBench names, plus every ``.npz``/``.parquet``/``.pq``/``.csv`` of
    given folders (not recursive; other files such as READMEs are skipped). Dataset names (file
    stems) must be unique."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix in SUFFIXES and f.is_file()))
            continue
        try:
            files.append(resolve_data(p))
        except DatasetError:
            raise BenchError(f"{p}: no such file or folder, and no ADBench data set of that name") from None
    if not files:
        raise BenchError(f"no dataset files ({', '.join(SUFFIXES)}) in {[str(p) for p in paths]}")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise BenchError(f"two datasets named {f.stem!r}: {stems[f.stem]} and {f}")
        stems[f.stem] = f
    return files


# -- one run --------------------------------------------------------------------------------------
#: the benchmark's splits: ADBench's, and one whose test anomalies are of a type the labels do not show
SPLITS = ("usual", "unseen-types")


@dataclass(frozen=True)
class BenchConfig:
    """Protocol and execution settings of a benchmark."""

    la: tuple[float, ...] = (0.1,)
    seeds: tuple[int, ...] = (0,)
    max_rows: int = 10_000
    test_size: float = 0.3
    split: str = "usual"  # one of SPLITS: "unseen-types" asks whether the labels teach anything about new types
    cpus_per_task: float = 1
    in_driver: frozenset[str] = RAY_DETECTORS  # kinds or labels run in the driver, one at a time
    max_retries: int = 1
    curve_points: int = 200
    progress: bool = True
    id_column: str | None = None  # CSV/Parquet tables: a column of row ids (not a feature)
    label_column: str | None = None  # ... and the label column when not 'y'/'label'

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise BenchError(f"split {self.split!r} is not one of {', '.join(SPLITS)}")


def make_split(ds: TabularDataset, la: float, seed: int, cfg: BenchConfig) -> Split | None:
    """The run's train/test split under ``cfg.split``; None where the data set has no second
    anomaly type to hold out at this seed (see :func:`unseen_type_split`)."""
    split = adbench_split(ds, SplitConfig(test_size=cfg.test_size, max_rows=cfg.max_rows, la=la, seed=seed))
    return split if cfg.split == "usual" else unseen_type_split(split, seed=seed)


def run_one(spec: DetectorSpec, ds: TabularDataset, la: float, seed: int, cfg: BenchConfig, ran_in: str = "task") -> dict[str, Any]:
    """One run, in this process. Never raises: failures come back as a record with ``error``
    (and ``traceback``) set and NaN metrics."""
    record = empty_record(spec.label, spec.kind, ds.name, la, seed, ran_in, cfg.split)
    row = record["row"]
    row["n_features"] = ds.n_features
    try:
        split = make_split(ds, la, seed, cfg)
        if split is None:  # run_bench skips these before dispatch; a direct call says why
            raise DatasetError(f"{ds.name}: no held-out anomaly type at la={la:g}, seed {seed} (unseen-types split)")
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
        fail(record, exc, traceback.format_exc())
    return record


def _task(spec: DetectorSpec, ds: TabularDataset, la: float, seed: int, cfg: BenchConfig) -> dict[str, Any]:
    import torch

    torch.set_num_threads(max(1, int(cfg.cpus_per_task)))  # no oversubscription among parallel tasks
    return run_one(spec, ds, la, seed, cfg, ran_in="task")


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
    ``report.md``/``report.html`` with figures, see :mod:`.report`) to ``out_dir``.

    Needs a running Ray (``rlad.core.ray_init.init_ray``) when any run goes to a task."""
    import ray
    from tqdm.auto import tqdm

    if not detectors:
        raise BenchError("no detectors to benchmark")
    files = find_data_files(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / "bench_config.json").exists():
        earlier = json.loads((out / "bench_config.json").read_text()).get("protocol", {}).get("split", "usual")
        if earlier != cfg.split:
            raise BenchError(f"{out} holds a benchmark on the {earlier!r} split, not {cfg.split!r}: "
                             "resume it with its own split, or write to another --out")
    store = RunStore(out, resume)
    if resume:
        log(f"[bench] resuming: {len(store.done)} successful run(s) already in {store.runs_path}")

    started = time.time()
    (out / "bench_config.json").write_text(json.dumps({
        "detectors": [dataclasses.asdict(s) for s in detectors], "data": [str(f) for f in files],
        "protocol": dataclasses.asdict(cfg), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=2, default=json_default))

    in_driver = lambda s: s.kind in cfg.in_driver or s.label in cfg.in_driver  # noqa: E731

    todo_task: list[tuple[DetectorSpec, str, Any, float, int]] = []
    todo_driver: list[tuple[DetectorSpec, str, Any, float, int]] = []
    datasets: dict[str, TabularDataset] = {}
    unreadable = 0
    skipped: list[dict[str, Any]] = []  # (dataset, la, seed) without a split of cfg.split: not runs
    for path in files:
        pending = [(s, la, seed) for s in detectors for la in cfg.la for seed in cfg.seeds
                   if (s.label, path.stem, float(la), int(seed)) not in store.done]
        if not pending:
            continue
        try:
            ds = load_dataset(path, label_column=cfg.label_column, id_column=cfg.id_column)
        except DatasetError as exc:
            unreadable += 1
            log(f"[bench] {exc}")
            for s, la, seed in pending:
                store.append(fail(empty_record(s.label, s.kind, path.stem, la, seed, "driver", cfg.split), exc))
            continue
        datasets[ds.name] = ds
        if cfg.split != "usual":
            missing = set()
            for la, seed in sorted({(float(la), int(seed)) for _, la, seed in pending}):
                try:
                    ok = make_split(ds, la, seed, cfg) is not None
                except DatasetError:
                    ok = True  # too few rows to split at all: the run fails and says so
                if not ok:
                    missing.add((la, seed))
                    skipped.append({"dataset": ds.name, "la": la, "seed": seed})
                    log(f"[bench] {ds.name} la={la:g} seed {seed}: no unseen-types split (it needs {UNSEEN_NEEDS}); skipped")
            pending = [(s, la, seed) for s, la, seed in pending if (float(la), int(seed)) not in missing]
        for s, la, seed in pending:
            (todo_driver if in_driver(s) else todo_task).append((s, ds.name, None, float(la), int(seed)))

    total = len(todo_task) + len(todo_driver)
    if skipped and not total and not store.done and not unreadable:
        store.close()
        raise BenchError(f"no data set has an unseen-types split at la {list(cfg.la)} and seeds {list(cfg.seeds)} "
                         f"(it needs {UNSEEN_NEEDS}): try more seeds, a higher --la or more rows")
    log(f"[bench] {len(detectors)} detector(s) x {len(files)} dataset(s) x {len(cfg.la)} la x {len(cfg.seeds)} seed(s): "
        f"{total} run(s) to do ({len(todo_task)} as Ray tasks, {len(todo_driver)} in the driver)"
        + (f"; {unreadable} unreadable dataset(s) recorded as failed" if unreadable else "")
        + (f"; {len(skipped)} (dataset, la, seed) without an unseen-types split skipped" if skipped else ""))
    bar = tqdm(total=total, desc="bench", unit="run", disable=not cfg.progress, dynamic_ncols=True)

    def tick(r: dict[str, Any]) -> None:
        row = r["row"]
        bar.set_postfix_str(f"{row['detector']}/{row['dataset']}: " + ("FAILED" if row["error"] else f"roc {row['auc_roc']:.3f}"))
        bar.update(1)

    interrupted = False
    pending_refs: dict[Any, tuple[DetectorSpec, str, float, int]] = {}
    try:
        if todo_task:
            if not ray.is_initialized():
                raise BenchError("Ray is not running: call rlad.core.ray_init.init_ray() first")
            remote = ray.remote(_task).options(num_cpus=cfg.cpus_per_task, max_retries=cfg.max_retries)
            refs = {name: ray.put(ds) for name, ds in datasets.items() if any(t[1] == name for t in todo_task)}
            for s, name, _, la, seed in todo_task:
                pending_refs[remote.remote(s, refs[name], la, seed, cfg)] = (s, name, la, seed)
            while pending_refs:
                ready, _ = ray.wait(list(pending_refs), num_returns=1)
                for ref in ready:
                    s, name, la, seed = pending_refs.pop(ref)
                    try:
                        r = ray.get(ref)
                    except Exception as exc:  # worker died, object lost, ...: record and go on
                        r = fail(empty_record(s.label, s.kind, name, la, seed, "task", cfg.split), exc)
                    store.append(r)
                    tick(r)
        for s, name, _, la, seed in todo_driver:
            r = run_one(s, datasets[name], la, seed, cfg, ran_in="driver")
            store.append(r)
            tick(r)
    except KeyboardInterrupt:  # Ctrl-C: keep what finished, then stop
        interrupted = True
        for ref in pending_refs:
            ray.cancel(ref, force=True)
    finally:
        bar.close()
        store.close()

    records = store.records()
    if interrupted:
        if records:
            write_results(results_frame(records), curves_frame(records), out)
        log(f"[bench] interrupted: {len(records)} finished run(s) written to {out} (rerun with --resume to finish)")
        raise KeyboardInterrupt
    result = BenchResult(results_frame(records), curves_frame(records), out, {})
    result.files = write_results(result.results, result.curves, out)
    cfg_path = out / "bench_config.json"
    meta = json.loads(cfg_path.read_text())
    meta.update(finished=time.strftime("%Y-%m-%d %H:%M:%S"), wall_s=round(time.time() - started, 3),
                n_runs=len(result.results), n_failed=result.n_failed, skipped=skipped)
    cfg_path.write_text(json.dumps(meta, indent=2, default=json_default))
    result.files["config"] = cfg_path
    result.files["runs"] = store.runs_path
    result.files["errors"] = store.errors_path
    if report:  # results are on disk already: a report failure is logged, not raised
        from rlad.platform.runtime.sweep.report import write_report

        try:
            result.files.update(write_report(result.results, result.curves, out, meta=meta))
        except Exception as exc:  # noqa: BLE001
            result.report_error = f"{type(exc).__name__}: {exc}"
            with open(out / "errors.log", "a") as f:
                f.write(f"== report\n{traceback.format_exc()}\n")
            log(f"[bench] report failed ({result.report_error}); results are complete, see {out / 'errors.log'}")
    log(f"[bench] {len(result.results)} run(s), {result.n_failed} failed, in {time.time() - started:.1f}s; results in {out}")
    return result


