import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.cli import main

from conftest import TINY, make_image_folder, tiny_config, write_config


def test_trained_run_has_artifacts_and_beats_chance(trained_run):
    run = trained_run.run_dir
    for name in ("config.yaml", "model.keras", "labels.txt", "metrics.json", "history.csv",
                 "skipped_files.txt"):
        assert (run / name).exists(), name
    assert any((run / "logs").rglob("*tfevents*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"source_val", "target_val", "target_test", "distribute"}
    dist = metrics.pop("distribute")
    assert dist["replicas"] == 1 and dist["workers"] == 1 and len(dist["weights_sha256"]) == 64
    for split in metrics.values():
        assert {"accuracy", "loss", "top_3_accuracy", "num_examples"} <= set(split)
        assert np.isfinite(split["loss"])
    # 10 classes: chance is 0.1.
    assert metrics["target_test"]["accuracy"] > 0.3
    rows = (run / "history.csv").read_text().splitlines()
    # header + pretrain/full (37 steps per epoch: a row each) + finetune/head and
    # finetune/full (3 steps per epoch, under train.eval_every_steps: one row per phase).
    assert len(rows) == 1 + 3 + 1 + 1
    assert [r.split(",")[2] for r in rows[1:]] == ["1", "2", "3", "2", "4"]  # epochs, not rows
    assert (run / "labels.txt").read_text().split() == [str(i) for i in range(10)]


def _wait_for_epoch(run, phase, epoch, proc, timeout=300):
    state = run / "checkpoint" / "state.json"
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before it could be killed: {proc.returncode}")
        if state.exists():
            try:
                s = json.loads(state.read_text())
            except ValueError:
                s = {}
            if s.get("phase") == phase and s.get("epoch", -1) >= epoch:
                return
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared in time")


def _resume_config(trained_run) -> dict:
    """Fine-tuning the shared tiny run's model with dropout and augmentation (the random
    states a resumed run must restore), a checkpoint after each of its 1 + 5 epochs."""
    return tiny_config(
        source=None,
        target={"labels_per_class": 20, "augment": {"rotate": 0.05, "zoom": 0.1, "translate": 0.05}},
        model={"weights": str(trained_run.run_dir), "dropout": 0.3},
        train={"batch_size": 20, "eval_every_steps": 1,
               "finetune": {"head_epochs": 1, "epochs": 5, "lr": 0.002}},
    )


@pytest.fixture(scope="module")
def resume_reference(trained_run, tmp_path_factory):
    """The uninterrupted run, in a process of its own as the killed one is (in this process,
    after other runs, the same config ends with other weights: see the note on issue 33)."""
    tmp = tmp_path_factory.mktemp("resume-ref")
    config = write_config(tmp / "tiny.yaml", _resume_config(trained_run))
    proc = subprocess.run([sys.executable, "-m", "kerastl", "train", config, "--out", str(tmp / "run"), "--quiet"],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "run"


@pytest.mark.slow
def test_resume_after_kill_ends_where_the_uninterrupted_run_does(tmp_path, trained_run, resume_reference):
    config = write_config(tmp_path / "tiny.yaml", _resume_config(trained_run))
    run = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerastl", "train", config, "--out", str(run), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        _wait_for_epoch(run, "finetune/full", 0, proc)  # SIGKILLed inside the second phase
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "metrics.json").exists()
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["phase"] == "finetune/full" and state["epoch"] < 4  # (the phase's epochs count from 0)
    finished = len(state["history"])
    assert finished == 1 + state["epoch"] + 1  # the head phase's epoch and the full phase's

    result = CliRunner().invoke(main, ["train", "--resume", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    # Only the unfinished epochs were trained again.
    assert f"resumed  after {finished} finished epoch(s); {6 - finished} epoch(s) trained now" in result.output, result.output
    resumed = json.loads((run / "metrics.json").read_text())
    reference = json.loads((resume_reference / "metrics.json").read_text())
    # Batches and augmentation depend only on (seed, epoch, batch), and the checkpoint holds
    # the weights, the optimizer's state and Dropout's random state: the resumed run ends
    # with the uninterrupted run's weights bit for bit, and every epoch's row is its row.
    assert resumed["distribute"]["weights_sha256"] == reference["distribute"]["weights_sha256"]
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 1 + 5  # every epoch once (1 head, 5 full), none repeated or lost
    assert history == (resume_reference / "history.csv").read_text().splitlines()
    for split in ("target_val", "target_test"):
        assert resumed[split] == reference[split]


def test_cli_train_target_only_from_a_previous_run_on_an_image_folder(tmp_path, trained_run):
    data = make_image_folder(tmp_path / "colours", classes=("red", "blue"), per_class=20)
    bad = data / "red" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    cfg = tiny_config(
        source=None,
        target={"dataset": str(data), "labels_per_class": None, "val_fraction": 0.2, "test_fraction": 0.2},
        model={"weights": str(trained_run.run_dir)},
        train={"finetune": {"head_epochs": 2, "epochs": 3, "lr": 0.01}, "batch_size": 8},
    )
    path = write_config(tmp_path / "c.yaml", cfg)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", path, "--out", str(out), "--set", "train.top_k=1"])
    assert result.exit_code == 0, result.output
    assert "target_test" in result.output and "skipped  1 undecodable" in result.output
    # Not a terminal: one progress line per epoch with the phase, the metrics and an ETA.
    assert re.search(r"\[finetune/head\] epoch 2/2  loss [\d.]+  accuracy [\d.]+  val_accuracy [\d.]+  "
                     r"[\d.]+ s/epoch  ETA 0s", result.output), result.output
    # 3 epochs of 3 steps, under train.eval_every_steps: one line at the end of the round.
    assert "[finetune/full] epoch 3/3" in result.output and "[finetune/full] epoch 1/3" not in result.output
    assert "corrupt.jpg" in (out / "skipped_files.txt").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) - {"distribute"} == {"target_val", "target_test"}
    assert metrics["target_test"]["accuracy"] >= 0.75
    assert (out / "labels.txt").read_text().split() == ["blue", "red"]


def test_a_target_class_the_source_lacks_is_refused(tmp_path):
    data = make_image_folder(tmp_path / "colours", classes=("red", "blue"))
    path = write_config(tmp_path / "c.yaml", tiny_config(source={"dataset": str(data)}))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", path, "--out", str(out)])
    assert result.exit_code == 2
    assert "has classes the source lacks" in result.output and "open-set" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing half-made left behind


def test_out_dir_that_is_not_empty_is_refused(tmp_path, tiny_yaml):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["train", tiny_yaml, "--out", str(out)])
    assert result.exit_code == 2 and "not empty" in result.output
    assert (out / "precious.txt").read_text() == "keep me"


def test_cli_evaluate_prints_and_writes_the_full_report(trained_run):
    run = str(trained_run.run_dir)
    result = CliRunner().invoke(main, ["evaluate", run])
    assert result.exit_code == 0, result.output
    assert "confusion matrix" in result.output and "precision" in result.output
    report = json.loads((trained_run.run_dir / "evaluation.json").read_text())["digits:test"]
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == report["num_examples"]
    assert report["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert report["accuracy"] == pytest.approx(trained_run.metrics["target_test"]["accuracy"], abs=1e-6)
    assert len(report["per_class"]) == 10


def test_cli_evaluate_on_other_data_with_other_classes_is_an_error(trained_run, tmp_path):
    data = make_image_folder(tmp_path / "colours", classes=("red", "blue"))
    result = CliRunner().invoke(main, ["evaluate", str(trained_run.run_dir), "--data", str(data)])
    assert result.exit_code == 2 and "classes ['blue', 'red'] are not among the run's classes" in result.output


def test_cli_predict_table_and_json(trained_run, tmp_path):
    from PIL import Image

    from kerastl.data.builtin import load_sklearn_digits

    images, labels = load_sklearn_digits()
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(images[i, :, :, 0]).save(folder / f"d{i}_{labels[i]}.png")
    (folder / "broken.png").write_bytes(b"nope")
    run = str(trained_run.run_dir)
    result = CliRunner().invoke(main, ["predict", run, str(folder), "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert len(out) == 7
    broken = [r for r in out if r["image"].endswith("broken.png")][0]
    assert "error" in broken
    good = [r for r in out if "predictions" in r]
    assert all(len(r["predictions"]) == 2 and r["predictions"][0]["label"] in "0123456789" for r in good)
    assert all(r["predictions"][0]["probability"] >= r["predictions"][1]["probability"] for r in good)
    table = CliRunner().invoke(main, ["predict", run, str(folder / "d0_0.png")])
    assert table.exit_code == 0 and "d0_0.png" in table.output


def test_cli_predict_and_evaluate_on_a_missing_run(tmp_path):
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "nope"), "x.png"])
    assert result.exit_code == 2 and "no such run directory" in result.output
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path)])
    assert result.exit_code == 2 and "not a finished kerastl run" in result.output


def test_cli_predict_refuses_a_model_with_python_code_in_one_line(tmp_path):
    import keras
    from PIL import Image

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "lambda.keras"), str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "lambda.keras: refused for safety: it holds a Lambda layer" in result.output
    assert "Traceback" not in result.output


def test_backbones_command_lists_every_family():
    result = CliRunner().invoke(main, ["backbones"])
    assert result.exit_code == 0
    for name in ("MobileNetV3Small", "EfficientNetV2B0", "ConvNeXtTiny", "NASNetMobile", "VGG16"):
        assert name in result.output


def test_methods_command_lists_every_method_with_parameters():
    result = CliRunner().invoke(main, ["methods"])
    assert result.exit_code == 0
    from kerastl.adaptation import CATALOG
    from kerastl.adaptation.catalog import spec_of

    # Every declaration read from the modules' source names a class that finds it again.
    assert CATALOG.names()
    for name in CATALOG.names():
        assert spec_of(CATALOG.get(name).load()).name == name
    for name in CATALOG.names():
        assert name in result.output
    assert "max_lambda=1.0" in result.output


def test_class_weights_balance_the_label_distribution():
    from kerastl.data.pipeline import class_weights

    labels = np.array([0] * 30 + [1] * 10 + [2] * 20)
    w = class_weights(labels, 3)
    np.testing.assert_allclose(w, [60 / 90, 60 / 30, 60 / 60], rtol=1e-6)
    # Each class then carries the same total weight.
    totals = [w[c] * np.sum(labels == c) for c in range(3)]
    np.testing.assert_allclose(totals, [20.0] * 3, rtol=1e-6)


def test_warmup_then_cosine_schedule():
    from kerastl.training.recipe import make_schedule

    s = make_schedule(0.1, steps=100, warmup_steps=10)
    assert float(s(0)) == pytest.approx(0.0, abs=1e-9)
    assert float(s(5)) == pytest.approx(0.05, rel=1e-4)
    assert float(s(10)) == pytest.approx(0.1, rel=1e-4)
    assert float(s(55)) == pytest.approx(0.05, rel=1e-3)  # half-way down the cosine
    assert float(s(100)) == pytest.approx(0.0, abs=1e-6)


def test_short_epochs_are_fitted_in_rounds_that_divide_the_phase():
    from kerastl.training.stage import epochs_per_round

    assert epochs_per_round(15, 75, 20) == 1  # long epochs: one each
    assert epochs_per_round(80, 1, 20) == 20  # 80 one-step epochs: 4 rounds of 20 steps
    assert epochs_per_round(80, 1, 25) == 40  # the fewest epochs >= 25 steps that divide 80
    assert epochs_per_round(6, 3, 20) == 6  # fewer steps in the whole phase: one round
    assert epochs_per_round(80, 1, 20, initial_epoch=30) == 10  # a resume point starts a round
    assert epochs_per_round(7, 1, 20, initial_epoch=3) == 1


def test_rounds_of_short_epochs_train_exactly_what_one_epoch_rounds_train(tmp_path):
    """train.eval_every_steps only thins out the epoch-end work: the same batches reach the
    same steps, so the weights are bit for bit those of validating after every epoch."""
    from kerastl.config import config_from_dict
    from kerastl.training.job import train

    results = {}
    for every in (1, 20):
        cfg = tiny_config(source=None, train={"eval_every_steps": every,
                                              "finetune": {"head_epochs": 0, "epochs": 4, "lr": 0.002}},
                          model={"weights": "none", "unfreeze": "all"})
        results[every] = train(config_from_dict(cfg), out=str(tmp_path / str(every)), quiet=True,
                               echo=lambda s: None)
    assert [r["epoch"] for r in results[1].history] == [1, 2, 3, 4]
    assert [r["epoch"] for r in results[20].history] == [4]  # 4 epochs of 3 steps: one round
    assert results[1].epochs_run == results[20].epochs_run == 4
    digests = {k: r.metrics["distribute"]["weights_sha256"] for k, r in results.items()}
    assert digests[1] == digests[20]
    assert results[1].history[-1]["val_accuracy"] == results[20].history[-1]["val_accuracy"]


def test_a_frozen_backbone_head_phase_trains_on_features_computed_once(tmp_path, trained_run):
    """Head-only fine-tuning without augmentation: the head trains on the backbone's
    features computed once, and ends where training on images (the backbone run every
    step) ends; with augmentation the images are used, as they change every epoch."""
    from kerastl.config import config_from_dict
    from kerastl.training.job import train

    def run(name, **train_cfg):
        lines = []
        # The shared run's backbone: features that tell the images apart.
        cfg = tiny_config(source=None, model={"weights": str(trained_run.run_dir), "dropout": 0.2},
                          train={"finetune": {"head_epochs": 3, "epochs": 0, "lr": 0.01}, **train_cfg})
        result = train(config_from_dict(cfg), out=str(tmp_path / name), quiet=False, echo=lines.append)
        return result, "\n".join(lines)

    cached, cached_log = run("cached")
    images, images_log = run("images", cache_features=False)
    assert "the head trains on them" in cached_log and "the head trains on them" not in images_log
    assert "features of 279 images computed once" in cached_log  # 100 labelled + 179 validation
    # The same batches and dropout masks reach the same head: equal up to float rounding.
    for a, b in zip(cached.history, images.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    for split in ("target_val", "target_test"):
        assert cached.metrics[split]["loss"] == pytest.approx(images.metrics[split]["loss"], rel=1e-4)

    from kerastl.config import config_from_dict as parse
    from kerastl.data.augment import build_augmenter
    from kerastl.models.factory import build_classifier
    from kerastl.training.finetune import Phase, frozen_features_apply

    cfg = parse(tiny_config(source=None, model={"weights": "none"}))
    classifier = build_classifier(cfg.model, 10)
    head = Phase("finetune", "head", 1, "frozen")
    assert frozen_features_apply(cfg, classifier, head, None)
    assert not frozen_features_apply(cfg, classifier, head, build_augmenter({"rotate": 0.1}, "target"))
    assert not frozen_features_apply(cfg, classifier, Phase("finetune", "full", 1, "all"), None)


def test_a_phase_with_the_same_recipe_reuses_the_traced_step_and_trains_the_same_weights(tmp_path, monkeypatch):
    """pretrain/full then finetune/full with the same variables and optimizer kind: the second
    phase resets the optimizer and schedule instead of compiling (and tracing) again, and
    ends with the weights a freshly compiled model would reach."""
    from kerastl.config import config_from_dict
    from kerastl.training import finetune
    from kerastl.training.job import train
    from kerastl.training.transfer_model import TransferModel

    compiles = []
    original_compile = TransferModel.compile
    monkeypatch.setattr(TransferModel, "compile",
                        lambda self, *a, **k: (compiles.append(1), original_compile(self, *a, **k))[1])
    cfg = tiny_config(source={"num_examples": 400}, model={"bn": "train", "unfreeze": "all"},
                      train={"pretrain": {"epochs": 1, "lr": 0.005, "warmup_epochs": 0.5},
                             "finetune": {"head_epochs": 0, "epochs": 2, "lr": 0.002, "backbone_lr_mult": 1.0}})
    reused = train(config_from_dict(cfg), out=str(tmp_path / "reused"), quiet=True, echo=lambda s: None)
    assert len(compiles) == 1

    original_phase = finetune._run_phase
    monkeypatch.setattr(finetune, "_run_phase", lambda ctx, i, phase, previous: original_phase(ctx, i, phase, None))
    fresh = train(config_from_dict(cfg), out=str(tmp_path / "fresh"), quiet=True, echo=lambda s: None)
    assert len(compiles) == 3
    assert reused.metrics["distribute"]["weights_sha256"] == fresh.metrics["distribute"]["weights_sha256"]
    assert [r["lr"] for r in reused.history] == [r["lr"] for r in fresh.history]


def test_thread_settings_apply_in_a_new_process_and_are_kept_once_tensorflow_started(caplog):
    from kerastl.training.distribute import configure_threads

    code = ("from kerastl.training.distribute import configure_threads; configure_threads(1, 2); "
            "import tensorflow as tf; t = tf.config.threading; "
            "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.stdout.split() == ["1", "2"]
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # this process's TensorFlow has started
    before = tf.config.threading.get_intra_op_parallelism_threads()
    with caplog.at_level("INFO", logger="kerastl"):
        configure_threads(before + 1, None)  # no error: the run goes on with the threads it has
    assert tf.config.threading.get_intra_op_parallelism_threads() == before
    assert "CPU thread settings stay as they are" in caplog.text
