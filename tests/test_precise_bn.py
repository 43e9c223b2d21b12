"""A short fine-tuning run from scratch with the backbone's own BatchNorm momentum (0.999 in
MobileNetV3): the moving statistics never leave their initial values, and the saved model
predicts alike for every image. kerastl re-estimates them after training (precise BN), and
a run that still sits at chance while its training accuracy is high says so."""

import json

from click.testing import CliRunner

from kerastl.cli import main

from conftest import make_image_folder, write_config


def _run(tmp_path, folder, mode):
    cfg = {"name": mode, "target": {"dataset": str(folder), "val_fraction": 0.25, "test_fraction": 0.25},
           "model": {"backbone": "MobileNetV3Small", "backbone_args": {"alpha": 0.75, "minimalistic": True},
                     "weights": "none", "input_size": 32},
           "train": {"batch_size": 8, "report": False, "precise_bn": mode,
                     "finetune": {"head_epochs": 0, "epochs": 15, "lr": 0.003}}}
    out = tmp_path / mode
    result = CliRunner().invoke(main, ["train", write_config(tmp_path / f"{mode}.yaml", cfg), "--out", str(out),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    return result.output, json.loads((out / "metrics.json").read_text())


def test_stale_batchnorm_statistics_are_re_estimated_and_chance_is_reported(tmp_path):
    folder = make_image_folder(tmp_path / "four", classes=("a", "b", "c", "d"), per_class=16, seed=3)
    output, metrics = _run(tmp_path, folder, "never")
    assert metrics["target_val"]["accuracy"] == 0.25 and metrics["target_test"]["accuracy"] == 0.25
    assert "target_val accuracy 0.250 is at chance (0.250 for 4 classes) while training accuracy" in output
    assert "re-estimated" not in output

    output, metrics = _run(tmp_path, folder, "auto")
    assert "BN stats re-estimated on 32 training images (after 60 steps their moving averages still held 94%" \
        in output
    assert metrics["target_val"]["accuracy"] >= 0.4 and metrics["target_test"]["accuracy"] >= 0.4
    assert "at chance" not in output
