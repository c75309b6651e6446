"""``rlad bench``: a real benchmark over small ADBench files (symlinked, nothing copied) with fast
detectors and a deliberately broken one, on the module's 2-CPU Ray cluster."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlad.platform.cli.main import main
from rlad.core.data import adbench_file
from rlad.platform.runtime.sweep.report import mean_ranks, rank_table
from rlad.platform.runtime.sweep.runs import (
    RAY_DETECTORS, BenchConfig, BenchError, DetectorSpec, find_data_files, resolve_detectors, run_bench,
)
from rlad.platform.runtime.sweep.store import RESULT_COLUMNS

# broken: a real detector whose config is valid but impossible for the data (top_k above the experts
# fit() finds for it, auto: 8 at most), so fit() raises (a top_k above an explicit n_experts is refused earlier)
BROKEN = {"top_k": 9, "n_experts": None, "epochs": 1}
DETECTORS = ["iforest", "ecod", "mamba_moe", "broken=mamba_moe"]
CONFIGS = {"mamba_moe": {"epochs": 2, "members": 1, "floor_weight": 0.3}, "broken": BROKEN}  # the preset, light
SEEDS = (0, 1)
LA = (0.1,)


@pytest.fixture(scope="module")
def data_paths(tmp_path_factory) -> list[Path]:
    """A folder of symlinks to two ADBench files (plus a non-data file to skip), and a third file
    given directly."""
    folder = tmp_path_factory.mktemp("adbench_subset")
    for name in ("WBC", "glass"):
        src = adbench_file(name)
        (folder / src.name).symlink_to(src)
    (folder / "README.md").write_text("not a dataset")
    return [folder, adbench_file("breastw")]


@pytest.fixture(scope="module")
def bench(ray_cluster, data_paths, tmp_path_factory):
    specs = resolve_detectors(DETECTORS, CONFIGS)
    cfg = BenchConfig(la=LA, seeds=SEEDS, max_rows=2000, in_driver=RAY_DETECTORS | {"ecod"})
    out = tmp_path_factory.mktemp("bench_out")
    return run_bench(specs, data_paths, cfg, out_dir=out)


# -- ranks (no Ray) -------------------------------------------------------------------------------
def test_ranks_on_hand_made_table():
    rows = []
    auc = {  # (dataset, detector): AUC per seed; c fails everywhere on d2; a and b tie on d2
        ("d1", "a"): [0.9, 0.8], ("d1", "b"): [0.7, 0.7], ("d1", "c"): [0.6, 0.9],
        ("d2", "a"): [0.5, 0.7], ("d2", "b"): [0.6, 0.6], ("d2", "c"): [math.nan, math.nan],
        ("d3", "a"): [0.1, 0.1], ("d3", "b"): [0.3, 0.3], ("d3", "c"): [0.2, math.nan],
        ("d4", "a"): [math.nan] * 2, ("d4", "b"): [math.nan] * 2, ("d4", "c"): [math.nan] * 2,  # unreadable: no ranks
    }
    for (ds, det), values in auc.items():
        for seed, v in enumerate(values):
            rows.append({"detector": det, "dataset": ds, "la": 0.1, "seed": seed, "auc_roc": v, "auc_pr": v,
                         "error": "boom" if math.isnan(v) else None})
    results = pd.DataFrame(rows)
    ranks = rank_table(results)
    # d1: a 0.85, c 0.75, b 0.70 -> 1, 3, 2;  d2: a = b = 0.6 tie -> 1.5, c failed -> 3;
    # d3: b 0.3, c 0.2 (mean of its successful seed), a 0.1 -> 3, 1, 2
    expected = pd.DataFrame({"a": [1.0, 1.5, 3.0], "b": [3.0, 1.5, 1.0], "c": [2.0, 3.0, 2.0]}, index=ranks.index)
    pd.testing.assert_frame_equal(ranks, expected, check_names=False)
    means = mean_ranks(results)
    assert list(means.index) == ["a", "b", "c"]  # a and b tie, c last
    np.testing.assert_allclose(means.to_numpy(), [5.5 / 3, 5.5 / 3, 7 / 3])
    by_la = mean_ranks(results, by_la=True)
    np.testing.assert_allclose(by_la[0.1].reindex(["a", "b", "c"]).to_numpy(), [5.5 / 3, 5.5 / 3, 7 / 3])


def test_request_errors(tmp_path):
    with pytest.raises(BenchError, match="unknown detector"):
        resolve_detectors(["no_such_detector"])
    with pytest.raises(BenchError, match="bad config"):
        resolve_detectors(["iforest"], {"iforest": {"n_trees": 5}})
    with pytest.raises(BenchError, match="not benchmarked"):
        resolve_detectors(["iforest"], {"ecod": {"n_jobs": 1}})
    with pytest.raises(BenchError, match="twice"):
        resolve_detectors(["iforest", "iforest"])
    with pytest.raises(BenchError, match="no dataset files"):
        find_data_files([tmp_path])
    spec = resolve_detectors(["if10=iforest"], {"iforest": {"n_estimators": 20}, "if10": {"n_estimators": 10}})[0]
    assert spec == DetectorSpec("if10", "iforest", {"n_estimators": 10})
    assert spec.build(seed=3).config.random_state == 3  # the run's seed seeds the detector


def test_unreadable_dataset_is_recorded(tmp_path):
    bad = tmp_path / "data" / "bad.csv"
    bad.parent.mkdir()
    bad.write_text("a,b,y\n1,2,0\n3,4,2\n")  # label 2 is not 0/1
    result = run_bench(resolve_detectors(["ecod", "iforest"]), [bad.parent], BenchConfig(progress=False), out_dir=tmp_path / "out")
    assert result.n_failed == 2 and result.results["error"].str.startswith("DatasetError: ").all()
    assert result.files["report_md"].is_file() and result.files["report_html"].is_file()  # a report even with nothing to rank


# -- the benchmark --------------------------------------------------------------------------------
def test_one_row_per_run_in_csv_and_parquet(bench):
    res = bench.results
    n_datasets = 3
    assert len(res) == len(DETECTORS) * n_datasets * len(LA) * len(SEEDS)
    assert list(res.columns) == RESULT_COLUMNS
    assert not res.duplicated(["detector", "dataset", "la", "seed"]).any()
    assert set(res["dataset"]) == {"42_WBC", "14_glass", "4_breastw"}  # README.md skipped
    csv = pd.read_csv(bench.files["csv"])
    parquet = pd.read_parquet(bench.files["parquet"])
    for table in (csv, parquet):
        assert len(table) == len(res) and list(table.columns) == RESULT_COLUMNS
        np.testing.assert_allclose(table["auc_roc"].to_numpy(float), res["auc_roc"].to_numpy(float), equal_nan=True)
    assert (res["n_train"] + res["n_test"] == pd.Series({"42_WBC": 223, "14_glass": 214, "4_breastw": 683})[res["dataset"]].to_numpy()).all()
    # ecod was sent to the driver; the others ran as Ray tasks
    assert set(res.loc[res["detector"] == "ecod", "ran_in"]) == {"driver"}
    assert set(res.loc[res["detector"] != "ecod", "ran_in"]) == {"task"}


def test_aucs_valid_and_better_than_random(bench):
    ok = bench.results[bench.results["error"].isna()]
    assert len(ok) == 3 * 3 * 2
    assert ok[["auc_roc", "auc_pr"]].apply(lambda s: s.between(0, 1)).all().all()
    assert (ok[["fit_s", "score_s"]] > 0).all().all()
    iforest = ok[ok["detector"] == "iforest"].groupby("dataset")["auc_roc"].mean()
    assert (iforest > 0.75).all(), iforest


def test_failing_detector_recorded_others_complete(bench):
    res = bench.results
    broken = res[res["detector"] == "broken"]
    assert len(broken) == 3 * 2
    assert broken["error"].str.contains("ValueError: top_k=9").all()
    assert broken["auc_roc"].isna().all()
    assert res.loc[res["detector"] != "broken", "error"].isna().all()
    assert bench.n_failed == 6
    log = bench.files["errors"].read_text()
    assert log.count("== broken on") == 6 and "Traceback" in log
    # a failed detector ranks last everywhere
    assert mean_ranks(res)["broken"] == 4.0


def test_curves(bench):
    curves = pd.read_parquet(bench.files["curves"])
    ok = bench.results[bench.results["error"].isna()]
    for row in ok.itertuples():
        run = curves[(curves["detector"] == row.detector) & (curves["dataset"] == row.dataset) & (curves["seed"] == row.seed)]
        roc = run[run["curve"] == "roc"].sort_values("point")
        pr = run[run["curve"] == "pr"].sort_values("point")
        assert len(roc) >= 2 and len(pr) >= 2
        assert (roc["x"].iloc[0], roc["y"].iloc[0]) == (0.0, 0.0) and (roc["x"].iloc[-1], roc["y"].iloc[-1]) == (1.0, 1.0)
        assert np.trapezoid(roc["y"], roc["x"]) == pytest.approx(row.auc_roc, abs=1e-6)
        assert pr["x"].is_monotonic_increasing and pr["x"].iloc[-1] == 1.0
    assert set(curves["detector"]) == {"iforest", "ecod", "mamba_moe"}


def test_report_references_existing_figures(bench):
    out = bench.out_dir
    md = bench.files["report_md"].read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert {Path(p).name for p in images} >= {"ranks.png", "times.png", "curves_42_WBC_la0.1.png",
                                              "curves_14_glass_la0.1.png", "curves_4_breastw_la0.1.png"}
    for rel in images:
        png = out / rel
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    assert "## Mean ranks" in md and "## AUC-ROC per dataset" in md and "## Fit and score times" in md
    assert "| broken | 14_glass | 0.1 | 0 | ValueError: top_k=9" in md  # failed runs listed
    html = bench.files["report_html"].read_text()
    assert html.count('src="data:image/png;base64,') == len(images)  # self-contained
    assert "http://" not in html and "https://" not in html


def test_resume_reruns_only_failed(bench, tmp_path):
    specs = resolve_detectors(DETECTORS, CONFIGS)
    cfg = BenchConfig(la=LA, seeds=SEEDS, max_rows=2000, progress=False)
    lines = []
    again = run_bench(specs, _data_of(bench), cfg, out_dir=bench.out_dir, resume=True, report=False, log=lines.append)
    assert any("18 successful run(s) already" in line for line in lines)
    assert any("6 run(s) to do" in line for line in lines)
    assert len(again.results) == len(bench.results) and again.n_failed == 6
    pd.testing.assert_series_equal(again.results["auc_roc"], bench.results["auc_roc"])


def _data_of(bench) -> list[str]:
    import json

    return json.loads(bench.files["config"].read_text())["data"]


# -- the CLI --------------------------------------------------------------------------------------
def test_cli_exit_codes(ray_cluster, tmp_path, capsys):
    wbc = str(adbench_file("WBC"))
    common = ["--data", wbc, "--seeds", "0", "--no-progress", "--no-report"]
    assert main(["bench", "--detectors", "ecod", "iforest", "--out", str(tmp_path / "ok"), *common,
                 "--detector-config", "iforest.n_estimators=20"]) == 0
    res = pd.read_csv(tmp_path / "ok" / "results.csv")
    assert len(res) == 2 and res["error"].isna().all()

    config = tmp_path / "bench.yaml"
    config.write_text("broken:\n  top_k: 9\n  n_experts: null\n")  # auto experts: fit() fails, the run is recorded
    assert main(["bench", "--detectors", "ecod", "broken=mamba_moe", "--config", str(config), "--out", str(tmp_path / "fail"),
                 *common, "--detector-config", "broken.epochs=1"]) == 1
    res = pd.read_parquet(tmp_path / "fail" / "results.parquet").set_index("detector")
    assert pd.isna(res.loc["ecod", "error"]) and "top_k=9" in res.loc["broken", "error"]
    assert "1 of 2 run(s) failed" in capsys.readouterr().err

    assert main(["bench", "--detectors", "nope", "--out", str(tmp_path / "bad"), *common]) == 2
    assert main(["bench", "--detectors", "ecod", "--out", str(tmp_path / "bad"), *common, "--detector-config", "ecod.bogus=1"]) == 2
    assert main(["bench", "--detectors", "broken=mamba_moe", "--config", str(config), "--out", str(tmp_path / "bad"), *common,
                 "--detector-config", "broken.n_experts=2"]) == 2  # refused before any run: top_k 9 of 2 experts
    assert main(["bench", "--detectors", "ecod", "--out", str(tmp_path / "bad"), "--data", str(tmp_path / "missing.npz")]) == 2
    assert "unknown detector 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_detector_runs_in_driver(ray_cluster, tmp_path):
    """DPLAN builds an RLlib algorithm (its own Ray actors): it runs in the driver after the
    parallel tasks, on the same cluster, instead of inside a task that would hold the CPUs its
    actors need."""
    tiny = {"episodes": 1, "steps_per_episode": 100, "warmup_steps": 100, "target_update_freq": 100,
            "epsilon_steps": 200, "n_candidates": 200}
    specs = resolve_detectors(["iforest", "dplan"], {"dplan": tiny})
    result = run_bench(specs, [adbench_file("WBC")], BenchConfig(la=(0.3,), seeds=(0,), progress=False),
                       out_dir=tmp_path, report=False)
    res = result.results.set_index("detector")
    assert res["error"].isna().all(), res["error"].to_dict()
    assert res.loc["dplan", "ran_in"] == "driver" and res.loc["iforest", "ran_in"] == "task"
    assert res.loc["dplan", "auc_roc"] > 0.5


def test_unseen_types_split(ray_cluster, tmp_path, capsys):
    """``--split unseen-types``: each run scores the test set of ``unseen_type_split`` (the same AUC
    as fitting the detector on that split by hand); a seed without a second anomaly type is skipped
    and said so, not failed; a resume on the other split is refused."""
    from sklearn.metrics import roc_auc_score

    from rlad.algorithms.registry import build_detector
    from rlad.core.data import SplitConfig, adbench_split, load_dataset, unseen_type_split

    wpbc, out = adbench_file("WPBC"), tmp_path / "unseen"  # seed 0 has two anomaly types at la 0.1, seed 1 not
    args = ["bench", "--detectors", "iforest", "--data", str(wpbc), "--seeds", "0", "1", "--split", "unseen-types",
            "--out", str(out), "--no-progress", "--detector-config", "iforest.n_estimators=20"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "seed 1: no unseen-types split" in printed and "1 (dataset, la, seed) without an unseen-types split skipped" in printed
    res = pd.read_csv(out / "results.csv")
    assert len(res) == 1 and res.loc[0, "split"] == "unseen-types" and res.loc[0, "seed"] == 0

    split = unseen_type_split(adbench_split(load_dataset(wpbc), SplitConfig(la=0.1, seed=0)), seed=0)
    det = build_detector("iforest", {"n_estimators": 20}, seed=0).fit(split.X_train, split.y_train_semi)
    assert res.loc[0, "n_test"] == len(split.y_test) < 0.3 * load_dataset(wpbc).X.shape[0]
    assert res.loc[0, "auc_roc"] == pytest.approx(roc_auc_score(split.y_test, det.decision_function(split.X_test)))

    import json

    meta = json.loads((out / "bench_config.json").read_text())
    assert meta["protocol"]["split"] == "unseen-types"
    assert meta["skipped"] == [{"dataset": res.loc[0, "dataset"], "la": 0.1, "seed": 1}]
    report = (out / "report.md").read_text()
    assert "Split: unseen types" in report and f"{res.loc[0, 'dataset']} (la 0.1, seed 1)" in report

    assert main([*args[:6], "1", *args[8:-2], "--out", str(tmp_path / "none")]) == 2  # seed 1 only: nothing to run
    assert "no data set has an unseen-types split at la [0.1] and seeds [1]" in capsys.readouterr().err
    assert main(args[:-2] + ["--split", "usual", "--resume"]) == 2
    assert "holds a benchmark on the 'unseen-types' split" in capsys.readouterr().err
    assert main(args[:-2] + ["--split", "novel"]) == 2
    assert "split 'novel' is not one of usual, unseen-types" in capsys.readouterr().err
