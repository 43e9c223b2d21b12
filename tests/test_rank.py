"""Transferability scores (LogME, H-score, LEEP) and `kerastl rank`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY, write_config


def _features(informative: bool, n=120, d=30, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = rng.normal(size=(n, d))
    if informative:
        features[:, :classes] += 2 * np.eye(classes)[labels]
    return features, labels


def test_logme_is_the_bayesian_evidence_of_the_labels():
    """LogME per class is the log marginal likelihood per image that evidence-maximized
    Bayesian linear regression reaches: scikit-learn's BayesianRidge (its hyper-priors made
    flat) computes the same number its own way."""
    from sklearn.linear_model import BayesianRidge

    from kerastl.evaluation.transferability import logme

    features, labels = _features(True)
    expected = np.mean([
        BayesianRidge(fit_intercept=False, compute_score=True, alpha_1=1e-12, alpha_2=1e-12, lambda_1=1e-12,
                      lambda_2=1e-12, tol=1e-10, max_iter=1000).fit(features, (labels == c).astype(float)).scores_[-1]
        / len(labels) for c in range(4)])
    assert logme(features, labels, iterations=100) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("score", ["logme", "h_score"])
def test_features_that_carry_the_labels_score_higher(score):
    from kerastl.evaluation.transferability import SCORES

    fn = SCORES[score]
    good, labels = _features(True)
    noise, _ = _features(False)
    assert fn(good, labels) > fn(noise, labels) + 0.1
    # Few images, many dimensions (the few-label case): still told apart.
    good, labels = _features(True, n=40, d=200)
    noise, _ = _features(False, n=40, d=200)
    assert fn(good, labels) > fn(noise, labels)


def test_leep_of_a_perfect_and_of_a_blind_classifier():
    from kerastl.evaluation.transferability import leep

    labels = np.arange(40) % 4
    perfect = np.eye(4)[labels]
    assert leep(perfect, labels) == pytest.approx(0.0, abs=1e-9)
    blind = np.full((40, 7), 1 / 7)
    assert leep(blind, labels) == pytest.approx(np.log(1 / 4))


def test_rank_cli_ranks_runs_and_backbones(trained_run, tmp_path):
    """A trained run and an untrained backbone on the run's own target: a table, best first
    by LogME; the pretrained-and-fine-tuned run's features carry the labels far better."""
    from click.testing import CliRunner

    from kerastl.cli import main

    config = write_config(tmp_path / "tiny.yaml", TINY)
    result = CliRunner().invoke(main, ["rank", config, "-c", str(trained_run.run_dir), "-c", "MobileNetV3Small:none",
                                       "--json"])
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.output)
    assert [r["candidate"] for r in ranked] == [str(trained_run.run_dir), "MobileNetV3Small:none"]
    assert "leep" in ranked[0]["scores"] and "leep" not in ranked[1]["scores"]
    assert ranked[0]["scores"]["h_score"] > ranked[1]["scores"]["h_score"]
    table = CliRunner().invoke(main, ["rank", config, "-c", "MobileNetV3Small:none", "--by", "h_score"])
    assert table.exit_code == 0 and "ranked by h_score on 100 labelled target images" in table.output


def test_rank_cli_errors_name_the_candidate(tmp_path):
    from click.testing import CliRunner

    from kerastl.cli import main

    config = write_config(tmp_path / "tiny.yaml", TINY)
    result = CliRunner().invoke(main, ["rank", config, "-c", "NoSuchNet"])
    assert result.exit_code == 2 and "NoSuchNet" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["rank", config, "-c", "MobileNetV3Small:none", "--by", "leep"])
    assert result.exit_code == 2 and "LEEP needs a classifier" in result.output
