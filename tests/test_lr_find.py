"""`kerastl lr-find`: the learning-rate sweep, its suggestion and its files."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_config, write_config


def test_valley_falls_inside_the_falling_stretch():
    """A loss flat at small rates, falling between 1e-4 and 1e-2, blowing up after: each
    suggestion lies where the loss falls, valley and steepest inside the fall."""
    from kerastl.training.lr_find import suggest

    rates = np.logspace(-7, 1, 80)
    x = np.log10(rates)
    losses = np.where(x < -4, 2.3, np.where(x < -2, 2.3 - 0.75 * (x + 4), 0.8 + (x + 2) ** 2))
    found = suggest(list(rates), list(losses))
    assert 1e-4 < found["valley"] < 1e-2
    assert 1e-4 < found["steepest"] < 1e-2
    assert 1e-4 < found["minimum_tenth"] < 1e-2


def test_lr_find_cli_writes_the_curve_and_suggests(tmp_path):
    from click.testing import CliRunner

    from kerastl.cli import main

    config = write_config(tmp_path / "tiny.yaml", tiny_config(source=None))
    out = tmp_path / "lrf"
    result = CliRunner().invoke(main, ["lr-find", config, "--steps", "30", "--min-lr", "1e-5", "--max-lr", "30",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = np.loadtxt(out / "lr_find.csv", delimiter=",", skiprows=1)
    assert 5 < len(rows) <= 30
    assert np.all(np.diff(rows[:, 0]) > 0) and rows[0, 0] == pytest.approx(1e-5)
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    suggested = float(result.output.split("valley")[1].split()[0])
    assert 1e-5 <= suggested <= 30
    assert "--set train.finetune.lr=" in result.output


def test_lr_find_refuses_what_it_cannot_run(tmp_path):
    from click.testing import CliRunner

    from kerastl.cli import main

    config = write_config(tmp_path / "tiny.yaml", tiny_config())
    result = CliRunner().invoke(main, ["lr-find", config, "--stage", "finetune"])
    assert result.exit_code == 2 and "give --from RUN" in result.output
    adapt = write_config(tmp_path / "adapt.yaml", tiny_config(adapt={"method": "dann"}))
    result = CliRunner().invoke(main, ["lr-find", adapt])
    assert result.exit_code == 2 and "adapt section" in result.output
    result = CliRunner().invoke(main, ["lr-find", config, "--min-lr", "1", "--max-lr", "0.1"])
    assert result.exit_code == 2 and "--min-lr 1 must be below --max-lr 0.1" in result.output
