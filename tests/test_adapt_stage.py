import json

import numpy as np
import pytest

import keras

from kerastl.config import config_from_dict
from kerastl.evaluation.validators import VALIDATORS
from kerastl.training.job import train

from conftest import tiny_config


def _adapt_config(weights, **adapt):
    """DANN from the shared tiny run's weights (so source accuracy moves between epochs; at lr
    0.001 the source validation accuracy stayed on one class for all 3 epochs once the
    augmentation resampled once instead of three times, and epochs that tie cannot test the
    selection)."""
    return tiny_config(
        target={"labels_per_class": None, "augment": {"rotate": 0.05, "zoom": 0.1}},
        model={"weights": str(weights)},
        adapt={"method": "dann", "epochs": 3, "steps_per_epoch": 8, "optimizer": "adam",
               "lr": 0.003, "params": {"max_lambda": 0.3, "hidden": 64}, "selection": "source_val", **adapt},
    )


@pytest.fixture(scope="module")
def adapted_run(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt") / "run"
    return train(config_from_dict(_adapt_config(trained_run.run_dir)), out=str(out), quiet=True, echo=lambda s: None)


def test_adapted_run_reports_method_selection_and_domain_distance(adapted_run):
    run = adapted_run.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"source_val", "target_val", "target_test", "adaptation"} <= set(metrics)
    info = metrics["adaptation"]
    assert info["method"] == "dann"
    # The kept model is the epoch with the best source validation accuracy (first on ties),
    # and the saved model.keras is that epoch's classifier: evaluated again on the same
    # split, it scores what that epoch's validation scored.
    val = [row["val_accuracy"] for row in adapted_run.history if row["stage"] == "adapt"]
    assert len(val) == 3
    best = int(np.argmax(val))
    assert info["selection"] == {"criterion": "source_val", "epoch": best + 1, "score": val[best]}
    assert metrics["source_val"]["accuracy"] == pytest.approx(val[best], abs=1e-6)
    assert len(set(val)) > 1  # epochs differ, so picking the first or last would be caught
    assert 0.0 <= info["proxy_a_distance_before"] <= 2.0 and 0.0 <= info["proxy_a_distance_after"] <= 2.0
    assert (run / "features_before.npz").exists()  # what report.html's feature picture draws "before" from
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    for column in ("cls_loss", "adapt_loss", "source_accuracy", "target_accuracy",
                   "domain_accuracy", "lambda", "val_accuracy", "target_test_accuracy",
                   *(f"validator_{name}" for name in VALIDATORS)):
        assert column in header


def test_every_epoch_records_every_validator_and_each_ones_choice(adapted_run):
    rows = [row for row in adapted_run.history if row["stage"] == "adapt"]
    # The source validator is the source validation accuracy Keras logged.
    assert [r["validator_source_val"] for r in rows] == pytest.approx([r["val_accuracy"] for r in rows], abs=1e-6)
    chosen = adapted_run.metrics["adaptation"]["validators"]
    assert set(chosen) == {*VALIDATORS, "oracle"}
    for name in VALIDATORS:
        scores = [r[f"validator_{name}"] for r in rows]
        epoch = int(np.argmax(scores)) + 1
        assert chosen[name] == {"epoch": epoch, "target_test_accuracy": rows[epoch - 1]["target_test_accuracy"]}
    accuracies = [r["target_test_accuracy"] for r in rows]
    assert chosen["oracle"]["target_test_accuracy"] == max(accuracies)
    # The kept epoch's target test accuracy is what the final evaluation of the saved model measures.
    kept = adapted_run.metrics["adaptation"]["selection"]["epoch"]
    assert accuracies[kept - 1] == pytest.approx(adapted_run.metrics["target_test"]["accuracy"], abs=1e-6)


def test_a_label_free_validator_chooses_the_kept_epoch(trained_run, tmp_path):
    cfg = _adapt_config(trained_run.run_dir, epochs=3, steps_per_epoch=2, selection="snd")
    result = train(config_from_dict(cfg), out=str(tmp_path / "run"), quiet=True, echo=lambda s: None)
    rows = [row for row in result.history if row["stage"] == "adapt"]
    snd = [r["validator_snd"] for r in rows]
    kept = int(np.argmax(snd))
    assert result.metrics["adaptation"]["selection"] == {"criterion": "snd", "epoch": kept + 1, "score": snd[kept]}
    # model.keras is the kept epoch's classifier: its target test accuracy is that epoch's
    assert result.metrics["target_test"]["accuracy"] == pytest.approx(rows[kept]["target_test_accuracy"], abs=1e-6)


def test_auto_selection_is_im_with_held_back_target_images_and_source_val_without(trained_run, tmp_path):
    cfg = _adapt_config(trained_run.run_dir, epochs=2, steps_per_epoch=1, selection="auto")
    result = train(config_from_dict(cfg), out=str(tmp_path / "with"), quiet=True, echo=lambda s: None)
    im = [row["validator_im"] for row in result.history if row["stage"] == "adapt"]
    kept = int(np.argmax(im))
    assert result.metrics["adaptation"]["selection"] == {"criterion": "im", "epoch": kept + 1, "score": im[kept]}
    cfg["target"] = dict(cfg["target"], val_fraction=0.0)  # no held-back target images
    cfg["adapt"] = dict(cfg["adapt"], epochs=1)
    result = train(config_from_dict(cfg), out=str(tmp_path / "without"), quiet=True, echo=lambda s: None)
    assert result.metrics["adaptation"]["selection"]["criterion"] == "source_val"


def test_a_target_validator_without_held_back_target_images_is_a_clear_error(trained_run, tmp_path):
    from kerastl.errors import KerastlError

    cfg = _adapt_config(trained_run.run_dir, epochs=1, steps_per_epoch=1, selection="dev")
    cfg["target"] = dict(cfg["target"], val_fraction=0.0)
    with pytest.raises(KerastlError, match=r"adapt.selection: dev needs a source validation split and at least 2 "
                                           r"held-back target images \(.*held-back target images: 0 "
                                           r"\(target.val_fraction 0.0\)\)"):
        train(config_from_dict(cfg), out=str(tmp_path / "run"), quiet=True, echo=lambda s: None)


def test_adapted_model_is_a_plain_classifier_that_scores_what_the_run_reported(adapted_run):
    from kerastl.config import load_config
    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import build_dataset

    run = adapted_run.run_dir
    model = keras.saving.load_model(run / "model.keras", safe_mode=True, compile=False)
    names = [layer.name for layer in model.layers]
    assert "discriminator" not in names and "grl" not in names
    assert model.output_shape == (None, 10)
    cfg = load_config(run / "config.yaml")
    test = load_domain(cfg.target, cfg.seed, "target").splits["test"]
    probs = np.concatenate([np.asarray(model(x, training=False)) for x, _ in build_dataset(test, 32, 64, 10)])
    accuracy = float(np.mean(probs.argmax(1) == test.labels))
    assert accuracy == pytest.approx(adapted_run.metrics["target_test"]["accuracy"], abs=1e-9)


class _Killed(BaseException):
    """Stands for SIGKILL right after a checkpoint commit (nothing in kerastl catches it)."""


@pytest.mark.slow
def test_adaptation_resumed_after_a_crash_ends_bit_for_bit_where_the_uninterrupted_run_does(
        trained_run, adapted_run, tmp_path, monkeypatch):
    from kerastl.training.checkpoint import Checkpoint

    commit = Checkpoint.commit

    def commit_then_die(self, model, classifier, state):
        commit(self, model, classifier, state)
        if state["phase"] == "adapt" and state["epoch"] == 0:
            raise _Killed()

    run = tmp_path / "run"
    monkeypatch.setattr(Checkpoint, "commit", commit_then_die)
    with pytest.raises(_Killed):
        train(config_from_dict(_adapt_config(trained_run.run_dir)), out=str(run), quiet=True, echo=lambda s: None)
    monkeypatch.setattr(Checkpoint, "commit", commit)
    assert not (run / "metrics.json").exists()

    resumed = train(resume=str(run), quiet=True, echo=lambda s: None)
    assert resumed.epochs_run == 2  # epochs 2 and 3 only
    assert len(resumed.history) == 3
    # Seeded augmentation, per-(seed, epoch) batches, the model's optimizer state and its
    # progress counter restored: the same weights as the run that was never interrupted.
    assert resumed.metrics["distribute"]["weights_sha256"] == adapted_run.metrics["distribute"]["weights_sha256"]
    assert resumed.metrics["adaptation"]["selection"] == adapted_run.metrics["adaptation"]["selection"]


@pytest.mark.slow
def test_the_same_seed_gives_the_same_run(trained_run, adapted_run, tmp_path):
    """On one device a config and its seed fix the result bit for bit: augmentation, shuffling,
    dropout and initial weights all draw from the seed."""
    again = train(config_from_dict(_adapt_config(trained_run.run_dir)), out=str(tmp_path / "again"), quiet=True, echo=lambda s: None)
    assert again.metrics["distribute"]["weights_sha256"] == adapted_run.metrics["distribute"]["weights_sha256"]
    for split in ("source_val", "target_val", "target_test"):
        assert again.metrics[split] == adapted_run.metrics[split]


def test_selection_without_a_source_validation_split_keeps_the_last_epoch(trained_run, tmp_path, caplog):
    cfg = _adapt_config(trained_run.run_dir, epochs=2, steps_per_epoch=2, selection="source_val")
    cfg["source"] = dict(cfg["source"], val_fraction=0.0, num_examples=300)
    with caplog.at_level("WARNING", logger="kerastl"):
        result = train(config_from_dict(cfg), out=str(tmp_path / "run"), quiet=True, echo=lambda s: None)
    selection = result.metrics["adaptation"]["selection"]
    assert selection["criterion"] == "last (no source validation split)" and selection["epoch"] == 2
    assert "source.val_fraction is 0" in caplog.text


def test_adabn_leaves_the_target_statistics_in_the_saved_model(trained_run, tmp_path):
    from kerastl.models.batchnorm import recalibrate_batchnorm
    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import build_dataset
    from kerastl.models.factory import batchnorm_layers

    cfg = _adapt_config(trained_run.run_dir, method="adabn", epochs=1, steps_per_epoch=2, params={})
    cfg["source"] = dict(cfg["source"], val_fraction=0.0, num_examples=300)  # cheap: as the test above
    cfg = config_from_dict(cfg)
    result = train(cfg, out=str(tmp_path / "run"), quiet=True, echo=lambda s: None)
    target = load_domain(cfg.target, cfg.seed, "target").splits["train"]
    info = result.metrics["adaptation"]
    assert info["adabn"] == {"target_batches": -(-len(target) // 32), "target_images": len(target)}
    assert info["bn_protocol"] == "joint"
    # The saved statistics are the target's: estimating them again from the same images
    # changes nothing (they depend only on the weights and the images).
    model = keras.saving.load_model(result.run_dir / "model.keras", safe_mode=True, compile=False)
    saved = [np.array(layer.moving_mean) for layer in batchnorm_layers(model)]
    recalibrate_batchnorm(model, (x for x, _ in build_dataset(target, 32, 32, 10, cache=False)))
    for before, layer in zip(saved, batchnorm_layers(model)):
        np.testing.assert_allclose(np.array(layer.moving_mean), before, rtol=1e-4, atol=1e-4, err_msg=layer.name)


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
    with pytest.raises(KerastlError, match=r"training diverged in adapt/dann at epoch 1 \(a loss became NaN or "
                                           r"infinite\); lower adapt.lr \(now 1000000000000.0\)"):
        train(config_from_dict(cfg), out=str(tmp_path / "run"), quiet=True, echo=lambda s: None)


def test_collapse_warning_names_the_share_and_the_discriminator(caplog):
    from kerastl.training.adapt import warn_on_collapse

    with caplog.at_level("WARNING", logger="kerastl"):
        warn_on_collapse({"source_accuracy": 0.9, "target_top_class_share": 0.2}, 10, 0)
        assert not caplog.records  # predictions spread over classes: no warning
        warn_on_collapse({"source_accuracy": 0.9, "target_top_class_share": 0.85,
                           "domain_accuracy": 0.5}, 10, 4)
    assert "epoch 5: 85% of target predictions fall in one class" in caplog.text
    assert "discriminator at 0.50" in caplog.text


def test_checkpoint_keeps_only_the_files_its_state_names(adapted_run):
    # After the run only the last commit's files remain beside state.json and the selected
    # classifier.
    checkpoint = adapted_run.run_dir / "checkpoint"
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["phase"].startswith("adapt") and state["epoch"] == 2
    named = {state["training"]}  # one .npz holds the classifier and the training state
    assert {p.name for p in checkpoint.iterdir()} == named | {"state.json", "best-classifier.weights.h5"}


def test_semi_supervised_adaptation_trains_on_the_few_target_labels_and_keeps_the_whole_pool(trained_run, tmp_path):
    from kerastl.data.domain import load_domain

    cfg = _adapt_config(trained_run.run_dir, epochs=1, steps_per_epoch=2)
    cfg["target"] = dict(cfg["target"], labels_per_class=2)
    cfg = config_from_dict(cfg)
    lines = []
    result = train(cfg, out=str(tmp_path / "run"), quiet=False, echo=lines.append)
    target = load_domain(cfg.target, cfg.seed, "target")
    assert len(target.splits["train"]) == 20 and len(target.splits["pool"]) > 20
    assert result.metrics["adaptation"]["labelled_target_images"] == 20
    assert any(f"({len(target.splits['pool'])} unlabelled, 20 of them labelled)" in line for line in lines)
