"""`kerastl adapt RUN --target DATASET`: source-free adaptation of a finished run (SHOT)."""

import json

import numpy as np
from click.testing import CliRunner
from conftest import make_image_folder

from kerastl.cli import main
from kerastl.training.source_free import pseudo_labels


def test_pseudo_labels_are_the_nearest_centroid_of_the_feature_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    truth = np.repeat(np.arange(3), 20)
    features = centres[truth] + rng.normal(0, 0.5, (60, 3))
    # Predictions right for most images but wrong (confidently) for a quarter of them.
    predicted = np.where(rng.uniform(size=60) < 0.25, (truth + 1) % 3, truth)
    probs = np.full((60, 3), 0.05)
    probs[np.arange(60), predicted] = 0.9
    labels = pseudo_labels(features, probs)
    assert np.mean(predicted == truth) < 0.85
    np.testing.assert_array_equal(labels, truth)  # the clusters fix what the predictions got wrong


def test_adapt_trains_the_features_on_the_target_alone_and_records_its_parent(trained_run, tmp_path, monkeypatch):
    import keras

    import kerastl.data.domain as domain

    loaded = []
    original = domain.load_domain

    def recording(cfg, seed, origin):
        loaded.append((origin, cfg.dataset))
        return original(cfg, seed, origin)

    monkeypatch.setattr(domain, "load_domain", recording)
    out = tmp_path / "adapted"
    # SHOT's 0.3: this tiny run (47% on the target) collapses onto one class within two
    # epochs under the default 0.1, which the default label-free pick would then not keep.
    result = CliRunner().invoke(main, ["adapt", str(trained_run.run_dir), "--target", "digits", "--epochs", "2",
                                       "--selection", "last", "--out", str(out), "--beta", "0.3"])
    assert result.exit_code == 0, result.output
    assert loaded == [("target", "digits")]  # no source data read
    metrics = json.loads((out / "metrics.json").read_text())
    adaptation = metrics["adaptation"]
    assert adaptation["from_run"] == str(trained_run.run_dir) and adaptation["source_free"]
    assert [r["epoch"] for r in adaptation["epochs"]] == [0, 1, 2] and adaptation["selection"]["epoch"] == 2
    # SHOT maximizes information on the target: held-back images' score rises.
    assert adaptation["epochs"][2]["im"] > adaptation["epochs"][0]["im"]
    assert metrics["target_test"]["accuracy"] == adaptation["epochs"][2]["target_test_accuracy"]
    parent = keras.saving.load_model(trained_run.run_dir / "model.keras", compile=False)
    child = keras.saving.load_model(out / "model.keras", compile=False)
    # The head (the source hypothesis) is fixed; the features moved.
    np.testing.assert_array_equal(parent.get_layer("predictions").get_weights()[0],
                                  child.get_layer("predictions").get_weights()[0])
    assert any(not np.array_equal(a, b) for a, b in zip(parent.get_weights(), child.get_weights()))
    assert (out / "labels.txt").read_text() == (trained_run.run_dir / "labels.txt").read_text()
    assert "source-free: no source image read" in result.output


def test_adapt_keeps_the_run_as_it_was_when_no_epoch_scores_higher(trained_run, tmp_path, monkeypatch):
    import kerastl.evaluation.validators as validators

    calls = iter([1.0] + [0.5] * 10)  # epoch 0 scores highest
    monkeypatch.setattr(validators, "information_maximization", lambda p: next(calls))
    out = tmp_path / "kept"
    result = CliRunner().invoke(main, ["adapt", str(trained_run.run_dir), "--target", "digits", "--epochs", "1",
                                       "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adaptation"]["selection"]["epoch"] == 0 and "(the run as it was)" in result.output
    assert metrics["target_test"]["accuracy"] == metrics["adaptation"]["epochs"][0]["target_test_accuracy"]


def test_a_target_with_classes_the_run_lacks_is_refused_by_name(trained_run, tmp_path):
    data = make_image_folder(tmp_path / "new", classes=("0", "cat"))
    out = tmp_path / "adapted"
    result = CliRunner().invoke(main, ["adapt", str(trained_run.run_dir), "--target", str(data), "--out", str(out)])
    assert result.exit_code == 2
    assert "classes ['cat'] are not among the run's classes" in result.output and "Traceback" not in result.output
    assert not out.exists()
