"""Real tables (issue 31): column types learnt at fit time and kept as plain data, gaps, dates,
categories unseen at fit time, the schema checked by name at score time, the transactions
example, and one clear message with exit code 2 (no traceback) for bad input to every command."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlad.algorithms.registry import build_detector, load_detector
from rlad.core.checkpoint import load_checkpoint
from rlad.core.preprocess import TableError, TablePreprocessor, TableOptions
from rlad.platform.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from make_transactions import make  # noqa: E402


@pytest.fixture(scope="module")
def tx(tmp_path_factory):
    """The transactions example (600 rows) as CSV, and a model fitted on it by ``rlad fit``."""
    folder = tmp_path_factory.mktemp("tx")
    frame, fraud = make(600, seed=1)
    frame.to_csv(folder / "tx.csv", index=False)
    assert main(["fit", "iforest", "--data", str(folder / "tx.csv"), "--label-column", "label", "--id-column", "id",
                 "--save", str(folder / "model.pt")]) == 0
    return folder, frame, fraud


def _plain(x) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v) for v in x)
    return x is None or isinstance(x, (str, int, float, bool))


def test_types_are_learnt_and_round_trip_as_plain_data(tx):
    folder, frame, fraud = tx
    model = load_detector(folder / "model.pt")
    assert model.preprocessor.schema == [{"name": "amount", "type": "numeric"}, {"name": "merchant", "type": "categorical"},
                                         {"name": "hour", "type": "numeric"}, {"name": "country_risk", "type": "numeric"}]
    assert model.preprocessor.dropped_dates == ["ts"]  # the default, --dates drop
    assert "country_risk_missing" in model.config.columns and "merchant=online" in model.config.columns
    _, _, state = load_checkpoint(folder / "model.pt")
    assert _plain(state["table"])  # no pickled transformers: names, numbers, category lists
    features = frame.drop(columns=["id", "label"])
    fresh = build_detector("scaled", {"detector": "iforest"}, seed=0).fit(features, frame["label"])
    np.testing.assert_allclose(model.decision_function(features), fresh.decision_function(features), rtol=1e-6)
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(fraud, model.decision_function(features)) > 0.9


def test_options_choose_and_encode_columns():
    frame = pd.DataFrame({"a": ["1", "2", "", "4"], "b": ["x", "y", "x", "z"], "c": ["true", "false", "true", "true"],
                          "d": ["2026-01-01 03:00", "2026-02-01 04:00", "", "2026-03-05 10:00"], "e": [1, 2, 3, 4]})
    cyclical = TablePreprocessor(TableOptions(dates="cyclical")).fit(frame)
    assert cyclical.specs[3]["type"] == "datetime" and cyclical.specs[3]["outputs"] == [
        f"d_{p}_{f}" for p in ("hour", "dow", "month") for f in ("sin", "cos")] + ["d_missing"]
    at = cyclical.output_names.index("d_hour_sin")
    np.testing.assert_allclose(cyclical.transform(frame.head(1)).X[0, at:at + 2], [np.sin(np.pi / 4), np.cos(np.pi / 4)])  # 03:00
    pre = TablePreprocessor(TableOptions(categorical=("e",), dates="drop", missing_indicators=False, max_onehot=2)).fit(frame)
    assert [s["type"] for s in pre.specs] == ["numeric", "categorical", "boolean", "categorical"]  # d dropped
    assert pre.output_names == ["a", "b_frequency", "c", "e_frequency"]
    assert pre.transform(frame).X[2, 0] == 2.0  # median of 1, 2, 4
    assert TablePreprocessor(TableOptions(features=("a", "b"))).choose_columns(list(frame.columns)) == ["a", "b"]
    with pytest.raises(TableError, match=r"no column\(s\) \['zz'\]"):
        TablePreprocessor(TableOptions(drop=("zz",))).choose_columns(list(frame.columns))
    reject = TablePreprocessor(TableOptions(missing="reject")).fit(frame)
    assert reject.transform(frame).bad == {2: "column 'a': missing value"}


def test_schema_by_name_at_score_time(tx, tmp_path, capsys):
    folder, frame, _ = tx
    model = folder / "model.pt"
    new = frame.head(50).copy()
    new.loc[3, "merchant"] = "casino"  # unseen at fit time
    shuffled = new[["label", "ts", "country_risk", "id", "merchant", "hour", "amount"]].assign(note="x", extra=1)
    shuffled.to_csv(tmp_path / "new.csv", index=False)
    assert main(["score", str(model), "--data", str(tmp_path / "new.csv"), "--id-column", "id",
                 "--out", str(tmp_path / "s.parquet"), "--batch-rows", "10"]) == 0
    out = capsys.readouterr().out
    assert out.count("ignored column(s) the model does not read: ts, note, extra") == 1  # listed once, not per batch
    assert "1 row(s) with a 'merchant' category unseen at fit time" in out
    scores = pd.read_parquet(tmp_path / "s.parquet")
    np.testing.assert_allclose(scores["score"], load_detector(model).decision_function(new.drop(columns=["id", "label"])), rtol=1e-6)

    shuffled.drop(columns=["hour"]).to_csv(tmp_path / "missing.csv", index=False)
    assert main(["score", str(model), "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m.parquet")]) == 2
    assert "missing feature column(s) ['hour']" in capsys.readouterr().err
    bad = shuffled.astype({"amount": object, "hour": object})
    bad.loc[4, "amount"] = "12,50 EUR"
    bad.loc[7, "hour"] = "noon"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["score", str(model), "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "b.parquet")]) == 2
    err = capsys.readouterr().err
    assert "row 6: column 'amount': '12,50 EUR' is not a number" in err and "row 9: column 'hour': 'noon' is not a number" in err
    assert not (tmp_path / "b.parquet").exists()


def test_fit_skip_bad_rows_and_missing_reject(tx, tmp_path, capsys):
    folder, frame, _ = tx
    path = tmp_path / "t.csv"
    frame.head(200).to_csv(path, index=False)
    with open(path, "a") as f:
        f.write("tx9,1,2\n")  # line 202: wrong number of fields
    args = ["fit", "iforest", "--data", str(path), "--id-column", "id", "--save", str(tmp_path / "m.pt")]
    assert main([*args, "--missing", "reject"]) == 2
    err = capsys.readouterr().err
    assert "row 9: column 'country_risk': missing value" in err and "row 202: wrong number of fields" in err
    assert main([*args, "--missing", "reject", "--skip-bad-rows"]) == 0
    assert pd.read_csv(tmp_path / "m.pt.bad_rows.csv")["row"].tolist() == [9, 202]
    assert "199 rows" in capsys.readouterr().out and load_detector(tmp_path / "m.pt").preprocessor.options.missing == "reject"


def test_transactions_example_is_made_by_its_script(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_transactions.py"), "--out", str(tmp_path / "t.csv")], check=True,
                   capture_output=True)
    made = (tmp_path / "t.csv").read_text()
    assert made == (ROOT / "examples" / "transactions.csv").read_text()
    frame = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    assert list(frame.columns) == ["id", "amount", "merchant", "hour", "ts", "country_risk", "label"]
    assert (frame["country_risk"] == "").sum() == 1 and frame["merchant"].map(type).eq(str).all()


BAD_INPUT = {  # each command on bad input: one line, exit code 2, no traceback
    "fit": ["fit", "iforest", "--data", "{tmp}/nope.csv", "--save", "{tmp}/m.pt"],
    "score": ["score", "{tmp}/nope.pt", "--data", "{tmp}/nope.csv", "--out", "{tmp}/s.parquet"],
    "serve": ["serve", "{tmp}/nope.pt"],
    "bench": ["bench", "--detectors", "iforest", "--data", "{tmp}/nope.csv", "--out", "{tmp}/b"],
    "tune": ["tune", "swift_hydra", "--data", "{tmp}/nope.csv"],
    "meta-rae": ["meta-rae", "--model", "{tmp}/nope.pt", "--data", "{tmp}/nope.csv"],
}


def test_every_command_gives_one_message_and_exit_2_without_traceback(tmp_path):
    procs = {name: subprocess.Popen([sys.executable, "-m", "rlad.platform.cli", *(a.format(tmp=tmp_path) for a in argv)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, argv in BAD_INPUT.items()}  # side by side: each fails before torch or Ray would load
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, (name, out, err)
        assert "Traceback" not in err and err.strip().count("\n") == 0, (name, err)
        assert err.startswith(f"rlad {name}: error: ") and "nope" in err, (name, err)


def test_one_hot_blocks_are_balanced_against_numeric_columns(tmp_path):
    """Each one-hot block spreads rows as much as a typical scaled numeric column, so a category
    mismatch no longer outweighs every number in a distance; old behaviour with the option off."""
    from rlad.algorithms.scaled import category_weights

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"u": rng.random(400), "v": rng.random(400), "cat": rng.choice(list("abcde"), 400)})
    pre = TablePreprocessor().fit(frame)
    assert pre.onehot_blocks == [[2, 3, 4, 5, 6]]
    balanced = build_detector("scaled", {"detector": "knn", "table": {"balance_categories": True}}, seed=0).fit(frame)
    Z = balanced.transform(pre.transform(frame).X)
    var = Z.var(axis=0)
    assert var[2:].sum() == pytest.approx(np.median(var[:2]), rel=1e-4)  # the block's total = the numbers' median
    assert Z[:, 2:].max() < 0.5 and Z[:, :2].max() == pytest.approx(1.0)
    plain = build_detector("scaled", {"detector": "knn"}, seed=0).fit(frame)  # the default: off
    assert plain.transform(pre.transform(frame).X)[:, 2:].max() == 1.0
    balanced.save(tmp_path / "m.pt")  # the weights live in the saved scaling: a reloaded model scores the same
    np.testing.assert_allclose(load_detector(tmp_path / "m.pt").decision_function(frame), balanced.decision_function(frame))
    assert category_weights(Z, []).tolist() == [1.0] * Z.shape[1]
    assert category_weights(np.eye(3), [[0, 1, 2]]).tolist() == [1.0, 1.0, 1.0]  # nothing else to match: unchanged
