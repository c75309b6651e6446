"""``rlad fit`` / ``rlad score`` on one's own tables: all rows trained on, raw rows scored in record
batches, bad rows named before anything is written, folders scored by Ray tasks, quiet output,
and Ctrl-C leaving finished results on disk."""
from __future__ import annotations

import json
import os
import signal
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlad.algorithms.registry import load_detector
from rlad.algorithms.scaled import ScaledDetector
from rlad.platform.cli.main import main
from rlad.core.verbosity import quiet
from rlad.core import progress
from rlad.core.data import DatasetError, adbench_file, load_dataset
from rlad.core.metrics import auc_scores
from rlad.platform.runtime.batch_scoring import BadRowsError, ScoreOptions, score_tables


@pytest.fixture(scope="module")
def cardio():
    """ADBench cardio as a raw user table: id column, unscaled features, 20 known anomalies."""
    ds = load_dataset(adbench_file("cardio"))
    rng = np.random.default_rng(0)
    known = np.zeros_like(ds.y)
    known[rng.choice(np.flatnonzero(ds.y == 1), 20, replace=False)] = 1
    df = pd.DataFrame(ds.X.astype(np.float64) * 100.0 + 5.0, columns=[f"c{i}" for i in range(ds.n_features)])
    df.insert(0, "id", [f"r{i}" for i in range(len(df))])
    df["known"] = known
    return df, ds.y


@pytest.fixture(scope="module")
def fitted(cardio, tmp_path_factory):
    df, _ = cardio
    folder = tmp_path_factory.mktemp("fit")
    df.to_csv(folder / "cardio.csv", index=False)
    rc = main(["fit", "iforest", "--data", str(folder / "cardio.csv"), "--label-column", "known", "--id-column", "id",
               "--missing", "reject", "--save", str(folder / "model.pt")])
    assert rc == 0
    return folder


def test_fit_trains_on_all_rows_and_score_reproduces_it(cardio, fitted):
    df, y = cardio
    model = load_detector(fitted / "model.pt")
    assert isinstance(model, ScaledDetector) and model.config.columns == tuple(f"c{i}" for i in range(21))
    assert model.inner.n_features_in_ == 21 and model.low_.min() == pytest.approx(df.iloc[:, 1:22].to_numpy().min())  # all rows
    assert main(["score", str(fitted / "model.pt"), "--data", str(fitted / "cardio.csv"), "--id-column", "id",
                 "--out", str(fitted / "scores.parquet"), "--batch-rows", "500"]) == 0
    out = pd.read_parquet(fitted / "scores.parquet")
    assert list(out.columns) == ["row", "id", "score", "proba", "label"]
    assert out["id"].tolist() == df["id"].tolist() and out["row"].tolist() == list(range(2, len(df) + 2))  # CSV lines
    np.testing.assert_allclose(out["score"], model.decision_function(df.iloc[:, 1:22].to_numpy()), rtol=1e-6)  # raw rows
    np.testing.assert_array_equal(out["label"], (out["score"] > model.threshold_).astype(int))
    assert out["proba"].between(0, 1).all()
    assert auc_scores(y, out["score"].to_numpy())["auc_roc"] > 0.85


def test_bad_rows_are_named_and_nothing_is_written(cardio, fitted, tmp_path, capsys):
    df, _ = cardio
    bad = df.head(30).astype({"c3": object})
    bad.loc[4, "c3"] = "oops"
    bad.loc[9, "c1"] = np.nan
    bad.loc[12, "c0"] = 1e39  # finite in float64, beyond float32
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    with open(path, "a") as f:
        f.write("r99,1,2\n")  # wrong number of fields: line 32
    out = tmp_path / "s.parquet"
    assert main(["score", str(fitted / "model.pt"), "--data", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    for needle in ("row 6: column 'c3': 'oops' is not a number", "row 11: column 'c1'", "row 14: column 'c0': 1e+39 is beyond the float32 range",
                   "row 32: wrong number of fields", "4 bad row(s)"):
        assert needle in err
    assert list(tmp_path.iterdir()) == [path]  # nothing written

    assert main(["score", str(fitted / "model.pt"), "--data", str(path), "--out", str(out), "--skip-bad-rows"]) == 0
    scored = pd.read_parquet(out)
    assert len(scored) == 27 and not set(scored["row"]) & {6, 11, 14, 32}
    side = pd.read_csv(tmp_path / "s.parquet.bad_rows.csv")
    assert side["row"].tolist() == [6, 11, 14, 32]


def test_missing_feature_column_is_an_error(cardio, fitted, tmp_path):
    df, _ = cardio
    df.drop(columns=["c5"]).head(20).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DatasetError, match=r"missing feature column\(s\) \['c5'\]"):
        score_tables(fitted / "model.pt", tmp_path / "x.parquet", tmp_path / "o.parquet")


def test_folder_is_scored_by_ray_tasks(ray_cluster, cardio, fitted, tmp_path):
    df, _ = cardio
    folder = tmp_path / "in"
    folder.mkdir()
    df.iloc[:700].to_parquet(folder / "a.parquet")
    df.iloc[700:].to_csv(folder / "b.csv", index=False)
    reports = score_tables(fitted / "model.pt", folder, tmp_path / "out", ScoreOptions(id_column="id"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.parquet", "b.parquet"]
    both = pd.concat([pd.read_parquet(tmp_path / "out" / "a.parquet"), pd.read_parquet(tmp_path / "out" / "b.parquet")])
    np.testing.assert_allclose(both["score"], load_detector(fitted / "model.pt").decision_function(df.iloc[:, 1:22].to_numpy()), rtol=1e-6)
    assert sum(r.n_scored for r in reports) == len(df)


def test_semi_supervised_fit_reports_progress(cardio, tmp_path):
    df, y = cardio
    df.to_parquet(tmp_path / "t.parquet")
    (tmp_path / "cfg.yaml").write_text("epochs: 3\nmembers: 2\nfloor_weight: 0.3\n")  # the preset, light
    seen = []
    with progress.listen(lambda unit, done, total, metrics: seen.append((unit, done, total))):
        assert main(["fit", "mamba_moe", "--data", str(tmp_path / "t.parquet"), "--label-column", "known", "--id-column", "id",
                     "--config", str(tmp_path / "cfg.yaml"), "--save", str(tmp_path / "m.pt")]) == 0
    model = load_detector(tmp_path / "m.pt")
    assert model.inner.kind == "mamba_moe" and auc_scores(y, model.decision_function(df.iloc[:, 1:22].to_numpy()))["auc_roc"] > 0.8
    assert ("epoch", 3, 3) in seen
    members = [s for s in seen if s[0] == "member"]  # the bar follows the members, not epochs restarting
    assert members[:2] == [("member", 0, 2), ("member", 1, 2)] and members[-1] == ("member", 2, 2)


def test_progress_reaches_only_active_listeners():
    seen = []
    progress.update("epoch", 1, 2)  # nobody listens: nothing happens
    with progress.listen(lambda *a: seen.append(a)):
        progress.update("round", 1, 3, auc_roc=0.9)
    progress.update("round", 2, 3)
    assert seen == [("round", 1, 3, {"auc_roc": 0.9})]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                                          st.integers(-10**40, 10**40)), min_size=0, max_size=24), max_size=6))
def test_score_fuzz_never_crashes(fitted, tmp_path_factory, cells):
    """Any CSV body: either every row scored with finite numbers, or a DatasetError naming rows."""
    folder = tmp_path_factory.mktemp("fuzz")
    header = ",".join(["id", *(f"c{i}" for i in range(21))])
    lines = [",".join(str(v).replace(",", ";").replace("\n", " ").replace('"', "'") for v in row) for row in cells]
    path = folder / "f.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    try:
        reports = score_tables(fitted / "model.pt", path, folder / "o.parquet", ScoreOptions(id_column="id"))
    except DatasetError as exc:
        assert str(exc)
        return
    out = pd.read_parquet(folder / "o.parquet")
    assert len(out) == reports[0].n_scored and np.isfinite(out[["score", "proba"]].to_numpy()).all()


def test_quiet_by_default_and_ctrl_c_keeps_finished_runs(tmp_path):
    """``rlad bench`` with an RLlib detector in the driver: SIGINT mid-training ends it within seconds,
    exit code 130, the finished runs written; and no Ray INFO/WARNING line reached the terminal."""
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "rlad.platform.cli", "bench", "--detectors", "iforest", "dplan", "--data", "cardio",
           "--out", str(out), "--num-cpus", "2", "--no-report", "--no-progress", "--detector-config", "dplan.episodes=200"]
    # Ctrl-C as from a terminal: under a non-interactive shell's `cmd &` SIGINT is ignored (POSIX),
    # and an ignored signal stays ignored in children; a handler here gives the child the default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.time() + 240
        while not (out / "runs.jsonl").exists() or not (out / "runs.jsonl").read_text().strip():
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else "slow"
            time.sleep(0.5)
        time.sleep(8)  # DPLAN is training in the driver now
        proc.send_signal(signal.SIGINT)
        start = time.time()
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("rlad bench kept running 60 s after Ctrl-C")
        assert time.time() - start < 20 and proc.returncode == 130, output[-2000:]
    finally:  # a failed run must not leave the bench training beside the rest of the suite
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    results = pd.read_csv(out / "results.csv")
    assert results["detector"].tolist() == ["iforest"]  # the finished run is on disk
    assert [json.loads(line)["row"]["detector"] for line in (out / "runs.jsonl").read_text().splitlines()] == ["iforest"]
    backend = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWE] \d+ \d+\] ")  # Ray's C++ log lines ("... I 123 123] logging.cc")
    noise = [line for line in output.splitlines()
             if " INFO " in line or " WARNING " in line or line.startswith("(") or backend.match(line)]
    assert noise == [], noise[:5]


def test_quiet_switches_tune_to_its_silent_console_output(monkeypatch):
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    try:
        quiet(True)
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
        quiet(False)
        assert "RAY_AIR_NEW_OUTPUT" not in os.environ
        monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
        quiet(True)
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"  # the user's own setting wins
    finally:
        quiet(False)
