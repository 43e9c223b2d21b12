"""The label-free validators on predictions and features whose answer is known."""

import numpy as np
import pytest

from kerastl.evaluation import validators as v
from kerastl.training.validation import choices


def _one_hot(labels, classes):
    return np.eye(classes)[labels]


def test_entropy_and_information_maximization_reward_confident_and_diverse_predictions():
    uniform = np.full((40, 4), 0.25)
    confident = _one_hot(np.arange(40) % 4, 4) * 0.97 + 0.01
    collapsed = _one_hot(np.zeros(40, int), 4) * 0.97 + 0.01
    assert v.entropy(uniform) == pytest.approx(-np.log(4))
    assert v.entropy(confident) > v.entropy(uniform)
    assert v.information_maximization(uniform) == pytest.approx(0.0, abs=1e-9)
    # confident everywhere, but only diverse predictions score high on IM and BNM
    assert v.information_maximization(confident) > v.information_maximization(collapsed) + 1.0
    assert v.bnm(_one_hot(np.arange(40) % 4, 4)) == pytest.approx(np.sqrt(40 * 4) / 40)
    assert v.bnm(confident) > v.bnm(collapsed)


def test_snd_is_higher_when_predictions_form_dense_clusters():
    rng = np.random.default_rng(0)
    clustered = _one_hot(np.arange(60) % 3, 3) * 0.9 + rng.uniform(0, 0.05, (60, 3))
    scattered = rng.dirichlet(np.ones(3), 60)
    clustered /= clustered.sum(1, keepdims=True)
    assert v.snd(clustered) > v.snd(scattered)


def test_dev_is_the_plain_validation_loss_when_the_domains_match_and_weights_shifted_losses():
    rng = np.random.default_rng(0)
    fs, ft = rng.normal(size=(400, 4)), rng.normal(size=(300, 4))
    losses = rng.uniform(0, 2, 400)
    # Same distribution: weights ~1, risk ~ the mean loss.
    assert -v.dev(fs, losses, ft) == pytest.approx(losses.mean(), abs=0.1)
    # Target lies where feature 0 is large: source images there weigh more. Losses high
    # there must give a higher risk than losses high elsewhere.
    ft_shift = ft + np.array([1.5, 0, 0, 0])
    high_where_target = (fs[:, 0] > 0.75).astype(float) * 2
    high_elsewhere = (fs[:, 0] < -0.75).astype(float) * 2
    assert -v.dev(fs, high_where_target, ft_shift) > -v.dev(fs, high_elsewhere, ft_shift) + 0.5


def test_each_validator_chooses_its_best_epoch_and_reports_that_epochs_target_accuracy():
    rows = [{"epoch": 1, "validator_snd": 0.2, "validator_source_val": 0.9, "target_test_accuracy": 0.5},
            {"epoch": 2, "validator_snd": 0.4, "validator_source_val": 0.8, "target_test_accuracy": 0.7},
            {"epoch": 3, "validator_snd": 0.3, "validator_source_val": 0.9, "target_test_accuracy": 0.6}]
    got = choices(rows)
    assert got["snd"] == {"epoch": 2, "target_test_accuracy": 0.7}
    assert got["source_val"] == {"epoch": 1, "target_test_accuracy": 0.5}  # first of ties
    assert got["oracle"] == {"epoch": 2, "target_test_accuracy": 0.7}
    assert "dev" not in got


def test_proxy_a_distance_is_near_zero_for_one_distribution_and_near_two_for_separable_ones():
    from kerastl.evaluation.domain_gap import proxy_a_distance

    rng = np.random.default_rng(0)
    fs, ft = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    assert proxy_a_distance(fs, ft) < 0.3  # a linear classifier guesses: error ~0.5
    assert proxy_a_distance(fs, ft + np.array([4.0] + [0.0] * 7)) > 1.9  # error ~0: 2 (1 - 2 err)
    shifted = proxy_a_distance(fs, ft + np.array([1.0] + [0.0] * 7))  # error ~Phi(-0.5) = 0.31
    assert 0.5 < shifted < 1.1
