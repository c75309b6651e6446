"""Usefulness of synthetic anomalies (issue 28): the reference, its proxy, the Ray pool, the gate
and the non-RL arms."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rlad.algorithms.augmentation import nng_mix, smote
from rlad.algorithms.mamba_moe import MambaMoEConfig, MambaMoEDetector
from rlad.algorithms.usefulness import (GradientAlignment, UsefulnessConfig, UsefulnessPool, gate,
                                        honest_validation, reference_usefulness, validation_auc_pr)


@pytest.fixture(scope="module")
def toy():
    """Normal rows, and anomalies shifted in two features. Validation: the honest split of the
    training labels; the detector sees 2 labelled anomalies of the fit share, the others are spare
    (copies of held-out labelled anomalies, the candidates that must teach something)."""
    rng = np.random.default_rng(0)
    Xn, Xa = rng.normal(0.5, 0.12, (500, 6)), rng.normal(0.5, 0.12, (60, 6))
    Xa[:, :2] += 0.25
    X = np.clip(np.r_[Xn, Xa], 0, 1).astype(np.float32)
    y = np.r_[np.zeros(500), np.ones(60)].astype(int)
    fit, val = honest_validation(y, 0.3, 0)
    spare = fit[y[fit] == 1][2:]
    fit = np.setdiff1d(fit, spare)
    cfg = MambaMoEConfig(n_experts=1, top_k=1, d_model=16, epochs=10, unvalidated_epochs=10, val_fraction=0.0, seed=0)
    det = MambaMoEDetector(cfg).fit(X[fit], y[fit])
    return X, y, fit, val, spare, det


def test_reference_rewards_held_out_anomalies_and_not_normal_rows(toy):
    # checked once: with the candidates' loss term removed from short_update both values are 0 and this fails
    X, y, fit, val, spare, det = toy
    normal = fit[y[fit] == 0][:len(spare)]
    cfg = UsefulnessConfig(repeats=3)
    anomalies_d, normal_d = reference_usefulness(det, X[fit], y[fit], X[val], y[val], [X[spare], X[normal]], cfg, seed=0)
    assert anomalies_d > 0.02, anomalies_d
    assert normal_d < 0.01 and normal_d < anomalies_d - 0.02, (anomalies_d, normal_d)


def test_gradient_alignment_scores_every_row_and_is_bounded(toy):
    X, y, fit, val, spare, det = toy
    proxy = GradientAlignment(det, X[val], y[val])
    out = proxy(X[spare])
    assert out.shape == (len(spare),) and np.all(np.abs(out) <= 1.0 + 1e-9)
    assert proxy(X[spare[:1]]).shape == (1,)  # a single row goes through the head too


def test_gate_refuses_a_round_that_lowers_validation(toy):
    X, y, fit, val, spare, det = toy
    before = validation_auc_pr(det, X[val], y[val])
    worse = MambaMoEDetector(det.config).fit(X[fit], 1 - y[fit])  # labels flipped: validation falls
    assert not gate(before, validation_auc_pr(worse, X[val], y[val]))
    assert gate(before, before)


def on_segment(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from ``x`` to the segment ``[a, b]``."""
    ab = b - a
    t = np.clip((x - a) @ ab / max(ab @ ab, 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(x - (a + t * ab)))


def test_nng_mix_mixes_an_anomaly_with_one_of_its_nearest_unlabelled_rows():
    # checked once: with neighbours drawn among all unlabelled rows (not the k nearest) this fails
    rng = np.random.default_rng(1)
    X = rng.random((60, 3)).astype(np.float32)
    y = (np.arange(60) < 5).astype(int)
    out = nng_mix(X, y, 40, np.random.default_rng(0), k=3, noise=0.0)
    assert out.shape == (40, 3) and out.dtype == np.float32
    unl = X[y == 0]
    for x in out:
        best = min(on_segment(x, a, unl[j]) for a in X[y == 1]
                   for j in np.argsort(np.linalg.norm(unl - a, axis=1))[:3])
        assert best < 1e-5
    lam_extreme = np.mean([min(np.linalg.norm(x - X[y == 1], axis=1).min(), np.linalg.norm(x - unl, axis=1).min()) < 0.05 for x in out])
    assert lam_extreme > 0.5  # Beta(0.2, 0.2): most mixes stay near one end
    noisy = nng_mix(X, y, 40, np.random.default_rng(0), k=3, noise=0.01)
    assert 0 < np.abs(noisy - out).max() < 0.1


def test_smote_interpolates_between_labelled_anomalies():
    rng = np.random.default_rng(2)
    X = rng.random((50, 4)).astype(np.float32)
    y = (np.arange(50) < 6).astype(int)
    out = smote(X, y, 30, np.random.default_rng(0), k=2)
    anomalies = X[y == 1]
    assert out.shape == (30, 4)
    for x in out:
        assert min(on_segment(x, a, b) for a in anomalies for b in anomalies) < 1e-5


def test_pool_on_ray_actors_gives_the_in_process_reference(toy, ray_cluster):
    X, y, fit, val, spare, det = toy
    cfg = UsefulnessConfig(update_steps=3, repeats=1, workers=2)
    sets = [X[spare[:8]], X[fit[:8]], X[spare[8:16]]]
    pool = UsefulnessPool(cfg)
    try:
        pool.set_round(det, X[fit], y[fit], X[val], y[val])
        remote = pool.score(sets, seed=0)
    finally:
        pool.close()
    local = reference_usefulness(det, X[fit], y[fit], X[val], y[val], sets, cfg, seed=0)
    np.testing.assert_allclose(remote, local, atol=1e-6)


def test_loop_gate_drops_a_round_whose_detector_is_worse_on_validation(toy, tmp_path):
    # checked once: with the gate's comparison inverted (after <= before) this fails
    from rlad.algorithms.swift_hydra import SwiftHydra, SwiftHydraConfig, retrain_in_process

    X, y, fit, val, spare, det = toy
    labels = y.copy()
    labels[spare] = 0  # unlabelled, as in a user's data
    small = dataclasses.replace(det.config, epochs=5, unvalidated_epochs=5, members=1)

    def retrain(cfg, X_aug, y_aug, workdir, rnd, sample_weight=None, target=None):
        if rnd == 1:  # round 1's detector learns the labels upside down
            target = None if target is None else 1.0 - target
            return MambaMoEDetector(cfg).fit(X_aug, 1 - y_aug, sample_weight=sample_weight, target=target)
        return retrain_in_process(cfg, X_aug, y_aug, workdir, rnd, sample_weight=sample_weight, target=target)

    cfg = SwiftHydraConfig(rounds=2, synthesis="smote", gate=True, refit=False, inference_module=False, detector=small,
                           max_synthetic_per_anomaly=2.0, max_synthetic_fraction=1.0, synthetic_share=0.5)
    loop = SwiftHydra(cfg, workdir=tmp_path, log=lambda _: None, retrain=retrain)
    records = [rec for rec, _ in loop.rounds(X, labels)]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert records[1]["accepted"] is False and records[1]["n_synthetic"] == 0
    assert records[1]["val_auc_pr"] < records[0]["val_auc_pr"]
    assert records[2]["accepted"] == (records[2]["val_auc_pr"] >= records[0]["val_auc_pr"])
    assert all(np.isfinite(r["val_auc_pr"]) for r in records)
