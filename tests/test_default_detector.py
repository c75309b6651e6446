"""The recommended default detector (issue 34) and its unsupervised floor (issue 37)."""
from __future__ import annotations

import numpy as np
import pytest

from rlad.algorithms import floor as fl
from rlad.algorithms.mamba_moe import MambaMoEConfig, MambaMoEDetector
from rlad.algorithms.registry import DEFAULT_DETECTOR, build_detector, load_detector
from rlad.core.data import known_label_split


def test_calibration_keeps_order_beyond_the_training_range():
    knots = fl.quantile_knots(np.arange(100.0))
    q = fl.calibrate(np.array([-10.0, 0.0, 49.5, 99.0, 120.0, 200.0]), knots)
    assert np.all(np.diff(q) > 0)  # extreme rows are not tied at 1
    assert q[1] == pytest.approx(0.0) and q[2] == pytest.approx(0.5, abs=0.01) and q[3] == pytest.approx(1.0)


def test_fusion_keeps_the_networks_top_when_the_iforest_is_chance():
    """Issue 28 (no collapse): the network ranks 40 anomalies above 2,000 normal rows, the IForest is
    noise. Fused at w 0.3 on the linear quantile scale, noise lifted normal rows above them (AUC-PR
    0.22); on the tail scale the ranking stays. Detectors saved before keep their linear fusion."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    net, y = np.r_[rng.normal(0, 1, 2000), rng.normal(3.2, 0.3, 40)], np.r_[np.zeros(2000), np.ones(40)]
    free = rng.random(len(y))
    qn, qf = fl.calibrate(net, fl.quantile_knots(net[y == 0])), fl.calibrate(free, fl.quantile_knots(free[y == 0]))
    assert average_precision_score(y, fl.fuse(qn, qf, 0.3)) > 0.9
    assert average_precision_score(y, fl.cascade(qn, qf, 0.3)) > 0.9
    assert average_precision_score(y, fl.fuse(qn, qf, 0.3, "linear")) < 0.5
    assert np.all(np.diff(fl.tail(np.array([-0.5, 0.0, 0.5, 0.99, 1.0, 1.5]))) > 0)  # finite, order kept beyond the range
    state = fl.Floor(0).fit(np.c_[net, free], y.astype(int), net, 0.3, None).state()
    assert state["floor_fusion"] == "cascade"
    assert fl.Floor.from_state({**state, "floor_fusion": "tail"}).fusion == "tail"  # saved before the cascade
    assert fl.Floor.from_state({k: v for k, v in state.items() if k != "floor_fusion"}).fusion == "linear"


def test_cascade_keeps_the_networks_top_and_ranks_the_rest_by_the_iforest():
    """Issue 37: a network that knows type A (top of its ranking) but ranks an unlabelled type B
    like normal rows; the IForest finds both, with normal rows among its top too. The cascade keeps
    the network's top (AUC-PR on A as the tail fusion) and below it gives the IForest the larger
    weight, so B loses only to the normal rows in the network's top (a ``1 - CONFIDENT`` share of
    them), where the tail fusion at the rule's weight leaves B among the normal rows."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    n, a, b = 2000, 30, 30
    q_net = np.r_[rng.random(n), rng.uniform(0.97, 1.0, a), rng.random(b)]
    q_free = np.r_[rng.random(n) ** 3, rng.uniform(0.6, 1.0, a), rng.uniform(0.85, 1.0, b)]
    kind = np.r_[np.zeros(n), np.ones(a), 2 * np.ones(b)]
    score = {"cascade": fl.cascade(q_net, q_free, 0.2), "tail": fl.fuse(q_net, q_free, 0.2)}
    is_a, b_rows = (kind == 1).astype(int), kind != 1
    assert average_precision_score(is_a, score["cascade"]) >= average_precision_score(is_a, score["tail"]) - 0.01
    roc_b = {f: roc_auc_score(kind[b_rows] == 2, s[b_rows]) for f, s in score.items()}
    roc_below = roc_auc_score(kind[b_rows] == 2, fl.fuse(q_net, q_free, fl.BELOW_WEIGHT)[b_rows])
    assert roc_b["cascade"] > fl.CONFIDENT * roc_below and roc_b["cascade"] > roc_b["tail"] + 0.1, (roc_b, roc_below)
    # the order: confident rows above all others, by the fusion at the weight; the others at BELOW_WEIGHT
    top = q_net >= fl.CONFIDENT
    s = score["cascade"]
    assert s[top].min() > s[~top].max()
    assert np.all(np.diff(s[top][np.argsort(fl.fuse(q_net[top], q_free[top], 0.2))]) >= 0)
    assert np.all(np.diff(s[~top][np.argsort(fl.fuse(q_net[~top], q_free[~top], fl.BELOW_WEIGHT))]) >= 0)
    assert np.all((fl.untail(s) >= fl.CONFIDENT) == top)  # the probability reads the network's confident rows
    for bad in (lambda: fl.Floor(0, "max"), lambda: MambaMoEConfig(floor_fusion="max")):
        with pytest.raises(ValueError, match="fusion"):
            bad()


def test_cascade_top_grows_to_hold_unlabelled_rows_scored_like_the_labelled_anomalies():
    """Where a fifth of the unlabelled rows score like the labelled anomalies (skin, satellite), the
    cascade's top holds them all; where few do, it stays the network's top 15%; the fitted threshold
    is saved with the detector."""
    rng = np.random.default_rng(0)
    labelled = rng.normal(3.0, 0.3, 20)
    many = np.r_[rng.normal(0, 1, 800), rng.normal(3.0, 0.3, 200)]
    few = np.r_[rng.normal(0, 1, 990), rng.normal(3.0, 0.3, 10)]
    y = np.r_[np.zeros(1000), np.ones(20)].astype(int)
    assert fl.top_share_start(np.r_[many, labelled], y) < 0.83  # about 90% of the 200 like-labelled rows
    assert fl.top_share_start(np.r_[few, labelled], y) == fl.CONFIDENT
    assert fl.top_share_start(few, np.zeros(1000, int)) == fl.CONFIDENT
    X = np.c_[np.r_[many, labelled], rng.random(1020)]
    floor = fl.Floor(0).fit(X, y, X[:, 0], 0.2, None)
    assert floor.confident < 0.83
    assert fl.Floor.from_state(floor.state()).confident == floor.confident
    top = fl.calibrate(X[:, 0], floor.net_knots) >= floor.confident
    assert top[800:1000].mean() > 0.85 and floor.score(X, X[:, 0])[top].min() > floor.score(X, X[:, 0])[~top].max()


def two_types(rng: np.random.Generator):
    """Normal rows near 0; labelled anomalies of two types, far along feature 0 or feature 1."""
    normal = rng.normal(0.0, 1.0, (400, 4))
    a = rng.normal(0.0, 1.0, (10, 4)); a[:, 0] += 6
    b = rng.normal(0.0, 1.0, (10, 4)); b[:, 1] += 6
    X = np.vstack([normal, a, b]).astype(np.float32)
    y = np.r_[np.zeros(400), np.ones(20)].astype(int)
    return X, y


def test_leave_one_type_out_moves_the_weight_to_the_iforest_when_held_out_types_are_missed():
    X, y = two_types(np.random.default_rng(0))

    def one_type_scorer(Xf, yf, seed):  # learns only the labelled anomalies' own type: near their mean
        centre = Xf[yf == 1].mean(0)
        return lambda Z: -np.linalg.norm(Z - centre, axis=1)

    net = one_type_scorer(X, y, 0)(X)
    chosen = fl.Floor(0).fit(X, y, net, None, one_type_scorer)
    assert chosen.choice["rule"] == "leave-one-type-out"
    assert chosen.weight >= 0.4  # the held-out type is found only by the IForest
    # a scorer that sees both types needs no floor: the weight stays at the low end
    perfect = fl.Floor(0).fit(X, y, np.linalg.norm(X, axis=1), None, lambda Xf, yf, s: (lambda Z: np.linalg.norm(Z, axis=1)))
    assert perfect.weight < chosen.weight
    few = fl.Floor(0).fit(X[:405], y[:405], net[:405], None, one_type_scorer)
    assert few.choice["rule"] == "default" and few.weight == fl.DEFAULT_WEIGHT


def test_one_labelled_anomaly_orders_every_row_by_the_tail_fusion(tmp_path):
    """Issue 34 (``floor_one_label_dev.csv``): with a single labelled anomaly and no weight given, the
    floor drops the cascade (one row cannot show a type: the network's top holds normal rows above
    the anomalies the IForest isolates) and orders every row by the tail fusion at
    ``ONE_LABEL_WEIGHT``; two labelled anomalies keep the cascade, a given weight is kept, and the
    choice survives save and load."""
    X, y = two_types(np.random.default_rng(2))
    one = np.zeros_like(y)
    one[np.flatnonzero(y == 1)[0]] = 1
    net = np.random.default_rng(3).random(len(y))  # a network that learnt nothing from one row
    f = fl.Floor(0).fit(X, one, net, None, None)
    assert (f.fusion, f.weight, f.choice["rule"]) == ("tail", fl.ONE_LABEL_WEIGHT, "one labelled anomaly")
    assert f.describe() == "every row by the tail fusion at IForest weight 0.5 (one labelled anomaly cannot show a type)"
    qn, qf = fl.calibrate(net, f.net_knots), fl.calibrate(f.free_score(X), f.free_knots)
    np.testing.assert_allclose(f.score(X, net), fl.fuse(qn, qf, fl.ONE_LABEL_WEIGHT))
    two = one.copy()
    two[np.flatnonzero(y == 1)[1]] = 1
    assert fl.Floor(0).fit(X, two, net, None, None).fusion == "cascade"
    given = fl.Floor(0).fit(X, one, net, 0.2, None)
    assert (given.fusion, given.weight) == ("cascade", 0.2)
    det = MambaMoEDetector(members=1, epochs=1, floor=True, d_model=8, d_state=4).fit(X, one)
    assert det.floor_.fusion == "tail" and det.floor_.weight == fl.ONE_LABEL_WEIGHT
    back = load_detector(det.save(tmp_path / "one.pt"))
    assert back.floor_.fusion == "tail"
    np.testing.assert_allclose(back.decision_function(X), det.decision_function(X), rtol=1e-5)


def test_registry_default_is_the_large_detector_with_the_floor():
    assert DEFAULT_DETECTOR == "mamba_moe"
    cfg = build_detector("mamba_moe").config
    assert (cfg.members, cfg.d_model, cfg.n_experts, cfg.top_k, cfg.floor) == (3, 64, 1, 1, True)
    assert build_detector("mamba_moe_fast").config == MambaMoEConfig()
    assert build_detector("mamba_moe", {"members": 1}, seed=4).config.members == 1  # options override the preset
    scaled = build_detector("scaled", {"detector": "mamba_moe", "options": {"epochs": 1}})
    assert scaled._inner().config.floor


def test_known_label_split_holds_out_a_share_of_each_class():
    y = np.r_[np.ones(10), np.zeros(90)].astype(int)
    train, val = known_label_split(y, 0.2, seed=1)
    assert y[val].sum() == 2 and (y[val] == 0).sum() == 18 and len(np.intersect1d(train, val)) == 0
    assert known_label_split(y, 0.0) is None and known_label_split(np.r_[1, np.zeros(20)].astype(int), 0.2) is None


def test_floored_detector_saves_and_scores(tmp_path):
    X, y = two_types(np.random.default_rng(1))
    det = MambaMoEDetector(members=1, epochs=2, floor=True, floor_weight=0.5, d_model=8, d_state=4).fit(X, y)
    p = det.anomaly_probability(X)
    assert p.min() >= 0 and p.max() <= 1 and det.floor_.weight == 0.5
    back = load_detector(det.save(tmp_path / "m.pt"))
    np.testing.assert_allclose(back.decision_function(X), det.decision_function(X), rtol=1e-5)
    # the floor ranks the held-out type: with the tail fusion at weight 1 only the IForest counts
    only_free = MambaMoEDetector(members=1, epochs=1, floor=True, floor_weight=1.0, floor_fusion="tail", d_model=8,
                                 d_state=4).fit(X, y)
    free = -only_free.floor_.model.score_samples(X)
    assert np.corrcoef(np.argsort(np.argsort(only_free.decision_function(X))), np.argsort(np.argsort(free)))[0, 1] > 0.999


def test_the_cascades_dial_reaches_the_fitted_floor_and_is_saved(tmp_path):
    """Issue 37's dial (``floor_frontier_dev.csv``): ``floor_confident`` and ``floor_below`` reach the
    fitted floor, the rows below the top are ranked by the IForest alone at ``floor_below`` 1, both
    settings survive save and load, and floors saved before the dial load with the defaults."""
    X, y = two_types(np.random.default_rng(1))
    det = MambaMoEDetector(members=1, epochs=2, floor=True, floor_weight=0.2, floor_confident=0.95, floor_below=1.0,
                           d_model=8, d_state=4).fit(X, y)
    f = det.floor_
    assert f.below == 1.0 and f.confident == fl.top_share_start(det.logits(X), y, 0.95) > fl.CONFIDENT
    qn = fl.calibrate(det.logits(X), f.net_knots)
    rest, s = qn < f.confident, det.decision_function(X)
    free = f.free_score(X)[rest]
    assert np.all(np.diff(s[rest][np.argsort(free, kind="stable")]) >= -1e-12)  # below the top: the IForest's order
    assert s[~rest].min() > s[rest].max()
    back = load_detector(det.save(tmp_path / "m.pt"))
    assert (back.floor_.below, back.floor_.confident) == (1.0, f.confident)
    np.testing.assert_allclose(back.decision_function(X), s, rtol=1e-5)
    state = {k: v for k, v in f.state().items() if k != "floor_below"}
    assert fl.Floor.from_state(state).below == fl.BELOW_WEIGHT  # saved before the dial
    default = MambaMoEDetector(members=1, epochs=1, floor=True, floor_weight=0.2, d_model=8, d_state=4).fit(X, y)
    assert default.floor_.below == fl.BELOW_WEIGHT and default.floor_.confident <= fl.CONFIDENT
    for bad, msg in (({"floor_below": 1.5}, "floor_below=1.5 must be in"), ({"floor_confident": 1.0}, "floor_confident=1.0 must be in")):
        with pytest.raises(ValueError, match=msg):
            MambaMoEConfig(**bad)


def test_adopt_fits_the_floor_on_networks_trained_elsewhere(monkeypatch):
    """Ray Train's workers return networks without a floor: ``adopt`` fits the floor ``fit`` would
    (``config.floor``) before its one calibration, refuses to guess without ``y``, and leaves a
    state that already has a floor as it is."""
    X, y = two_types(np.random.default_rng(3))
    arch = {"members": 1, "epochs": 1, "d_model": 8, "d_state": 4}
    networks = MambaMoEDetector(**arch).fit(X, y)._get_state()  # what a worker returns: no floor
    floored = MambaMoEConfig(**arch, floor=True, floor_weight=0.2)
    with pytest.raises(ValueError, match="needs y to fit the floor"):
        MambaMoEDetector(floored).adopt(X, networks)
    calibrations = []
    original = MambaMoEDetector._calibrate
    monkeypatch.setattr(MambaMoEDetector, "_calibrate", lambda self, X: calibrations.append(1) or original(self, X))
    det = MambaMoEDetector(floored).adopt(X, networks, y, sample_weight=np.ones(len(y)))
    assert calibrations == [1] and det.floor_ is not None and det.floor_.weight == 0.2
    np.testing.assert_allclose(det.decision_scores_, det.floor_.score(X, det.logits(X)))
    again = MambaMoEDetector(floored).adopt(X, det._get_state())  # a floored state needs no y
    np.testing.assert_allclose(again.decision_function(X), det.decision_function(X))


def test_fit_cli_defaults_to_the_recommended_detector_and_prints_its_validation(tmp_path, capsys, monkeypatch):
    from rlad.platform.cli import fit
    from rlad.platform.cli.main import main

    seen = {}
    monkeypatch.setattr(fit, "validation_auc", lambda args, options, X, y: seen.setdefault("detector", args.detector) and 0.75)
    csv = tmp_path / "t.csv"
    X, y = two_types(np.random.default_rng(2))
    np.savetxt(csv, np.c_[X, y], delimiter=",", header="a,b,c,d,y", comments="")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("members: 1\nepochs: 1\nd_model: 8\nd_state: 4\nfloor_weight: 0.3\n")
    assert main(["fit", "--data", str(csv), "--save", str(tmp_path / "m.pt"), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert seen["detector"] == "mamba_moe"
    assert "detector mamba_moe (registry preset" in out and "validation AUC 0.7500" in out
    assert "[fit] unsupervised floor: the network's top" in out and "at IForest weight 0.3 (as configured)" in out


def test_swing_summary_separates_the_model_seeds_from_the_splits(capsys):
    """Issue 34: ``bench_default_detector --model-seeds`` splits the seed sd into the model's part
    (on one split) and the split's; the docs' conclusion rests on this arithmetic."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_default_detector.py"
    spec = importlib.util.spec_from_file_location("bench_default_detector", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # one data set, three splits: each split's three model seeds differ by 0.01, the splits by 0.3
    rows = [{"dataset": "d", "seed": s, "net": {"auc_pr": base, "model_auc_pr": [base, base + 0.01, base + 0.02]}}
            for s, base in enumerate((0.2, 0.5, 0.8))]
    d, mean = bench.model_seed_sd(rows, ["net"])
    assert d["dataset"] == "d" and mean["dataset"] == "mean"
    assert d["net model sd"] == pytest.approx(0.01) and d["net split sd"] == pytest.approx(0.3)
    assert d["net AUC-PR"] == pytest.approx(0.5) and mean["net split sd"] == pytest.approx(0.3)
    assert d["net split sd of the model mean"] == pytest.approx(0.3)
