import json

import numpy as np
import pytest

import keras

from kerastl.config import config_from_dict
from kerastl.training.trainer import train

from conftest import tiny_config


@pytest.fixture(scope="module")
def adapted_run(tmp_path_factory):
    cfg = tiny_config(
        target={"labels_per_class": None},
        adapt={"method": "dann", "epochs": 2, "steps_per_epoch": 6, "optimizer": "adam",
               "lr": 0.002, "params": {"max_lambda": 0.3, "hidden": 64}},
    )
    out = tmp_path_factory.mktemp("adapt") / "run"
    return train(config_from_dict(cfg), out=str(out), quiet=True, echo=lambda s: None)


def test_adapted_run_reports_method_selection_and_domain_distance(adapted_run):
    run = adapted_run.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"source_val", "target_val", "target_test", "adaptation"} <= set(metrics)
    info = metrics["adaptation"]
    assert info["method"] == "dann"
    assert info["selection"]["criterion"] == "source_val" and info["selection"]["epoch"] in (1, 2)
    for key in ("proxy_a_distance_before", "proxy_a_distance_after"):
        assert 0.0 <= info[key] <= 2.0
    assert (run / "embedding.png").stat().st_size > 1000
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    for column in ("cls_loss", "adapt_loss", "source_accuracy", "target_accuracy",
                   "domain_accuracy", "lambda", "val_accuracy"):
        assert column in header


def test_adapted_model_is_a_plain_classifier_that_reloads_identically(adapted_run):
    from kerastl.data.builtin import load_sklearn_digits
    from kerastl.data.pipeline import resize

    path = adapted_run.run_dir / "model.keras"
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    names = [layer.name for layer in model.layers]
    assert "discriminator" not in names and "grl" not in names
    images, _ = load_sklearn_digits()
    x = np.stack([resize(np.repeat(im, 3, axis=-1), 32).numpy() for im in images[:8]])
    again = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(again(x)))
    assert model.output_shape == (None, 10)


def test_adapt_without_source_is_a_config_error():
    from kerastl.errors import ConfigError

    with pytest.raises(ConfigError, match="source: None is not allowed; expected a labelled source"):
        config_from_dict(tiny_config(source=None, adapt={"method": "dann"}))


def test_a_nan_loss_stops_the_run_with_a_clear_message(tmp_path):
    from kerastl.errors import KerastlError

    cfg = tiny_config(
        target={"labels_per_class": None},
        adapt={"method": "dann", "epochs": 2, "steps_per_epoch": 3, "optimizer": "sgd",
               "lr": 1e12, "anneal": False, "params": {"hidden": 16}},
    )
    with pytest.raises(KerastlError, match="adaptation with dann diverged .* lower adapt.lr"):
        train(config_from_dict(cfg), out=str(tmp_path / "run"), quiet=True, echo=lambda s: None)


def test_collapse_warning_names_the_share_and_the_discriminator(caplog):
    from kerastl.training.adapt import _warn_on_collapse

    with caplog.at_level("WARNING", logger="kerastl"):
        _warn_on_collapse({"source_accuracy": 0.9, "target_top_class_share": 0.2}, 10, 0)
        assert not caplog.records  # predictions spread over classes: no warning
        _warn_on_collapse({"source_accuracy": 0.9, "target_top_class_share": 0.85,
                           "domain_accuracy": 0.5}, 10, 4)
    assert "epoch 5: 85% of target predictions fall in one class" in caplog.text
    assert "discriminator at 0.50" in caplog.text


def test_checkpoint_keeps_only_the_files_its_state_names(adapted_run):
    # Pretraining saved weights + optimizer state, adaptation whole-model files: after the run
    # only the last commit's files remain beside state.json and the selected classifier.
    checkpoint = adapted_run.run_dir / "checkpoint"
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["phase"].startswith("adapt") and state["epoch"] == 1
    named = {state[key] for key in ("weights", "model")}
    assert {p.name for p in checkpoint.iterdir()} == named | {"state.json", "best-classifier.weights.h5"}
