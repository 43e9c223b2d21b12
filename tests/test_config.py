import pytest
import yaml
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.config import config_from_dict, load_config
from kerastl.errors import ConfigError

from conftest import TINY, write_config


def test_default_config_loads_and_has_both_domains():
    cfg = load_config(None)
    assert cfg.source.dataset == "syndigits"
    assert cfg.target.dataset == "digits"
    assert cfg.target.labels_per_class == 10
    assert cfg.model.weights == "none"


def test_partial_section_keeps_defaults():
    cfg = config_from_dict({"train": {"finetune": {"lr": 0.5}}})
    assert cfg.train.finetune.lr == 0.5
    assert cfg.train.finetune.head_epochs == 5  # the section default, not the field default
    assert cfg.train.pretrain.backbone_lr_mult == 1.0


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"train": {"batchsize": 3}}, "train.batchsize", "did you mean 'batch_size'"),
        ({"train": {"batch_size": "big"}}, "train.batch_size", "an integer"),
        ({"train": {"batch_size": 0}}, "train.batch_size", ">= 1"),
        ({"train": {"finetune": {"lr": -1}}}, "train.finetune.lr", "> 0"),
        ({"model": {"pooling": "sum"}}, "model.pooling", "'avg' | 'max'"),
        ({"target": {"val_fraction": 0.6, "test_fraction": 0.5}}, "target.test_fraction", "< 1"),
        ({"model": {"hidden": [64, "x"]}}, "model.hidden[1]", "an integer"),
        ({"source": 3}, "source", "mapping"),
    ],
)
def test_bad_values_name_file_key_value_and_what_is_allowed(tmp_path, data, key, words):
    path = write_config(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and words in msg


def test_set_overrides_any_key_and_drops_source():
    cfg = load_config(None, ["train.batch_size=8", "model.hidden=[32, 16]", "source=null"])
    assert cfg.train.batch_size == 8
    assert cfg.model.hidden == [32, 16]
    assert cfg.source is None


def test_set_with_bad_value_names_the_override():
    with pytest.raises(ConfigError, match="with --set overrides.*train.batch_size"):
        load_config(None, ["train.batch_size=abc"])
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["train.batch_size"])


def test_yaml_is_data_not_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_cli_config_error_exit_2_without_traceback(tmp_path):
    path = write_config(tmp_path / "bad.yaml", {"model": {"dropout": 2}})
    result = CliRunner().invoke(main, ["train", path])
    assert result.exit_code == 2
    assert "model.dropout" in result.output and "between 0.0 and 0.95" in result.output
    assert "Traceback" not in result.output


def test_missing_dataset_folder_fails_before_training(tmp_path):
    path = write_config(tmp_path / "c.yaml", dict(TINY, source=None, target={"dataset": str(tmp_path / "nope")}))
    result = CliRunner().invoke(main, ["train", path, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "target.dataset" in result.output and "is not a folder" in result.output


def test_unknown_backbone_lists_known_ones(tmp_path):
    path = write_config(tmp_path / "c.yaml", dict(TINY, model={"backbone": "MobileNetV9"}))
    result = CliRunner().invoke(main, ["train", path, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "unknown backbone 'MobileNetV9'" in result.output and "EfficientNetB0" in result.output


def test_resolved_config_round_trips():
    cfg = config_from_dict(TINY)
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"distribute": {"strategy": "multi_worker", "cpu_devices": 2}}, "distribute.cpu_devices",
         "null with strategy multi_worker"),
        ({"distribute": {"strategy": "tpu", "cpu_devices": 2}}, "distribute.cpu_devices", "null with strategy tpu"),
    ],
)
def test_keys_that_would_be_ignored_are_errors(data, key, words):
    with pytest.raises(ConfigError, match=f"{key}: .* expected {words}"):
        config_from_dict(data)


def test_training_stages_under_adapt_are_reported_unused_and_not_saved(caplog):
    from kerastl.config import dump_config

    data = dict(TINY, adapt={"method": "dann"})
    with caplog.at_level("WARNING", logger="kerastl"):
        cfg = config_from_dict(data, "job.yaml")
    assert "job.yaml: train.pretrain and train.finetune are not used: with an adapt section" in caplog.text
    saved = yaml.safe_load(dump_config(cfg))
    assert "finetune" not in saved["train"] and "pretrain" not in saved["train"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="kerastl"):
        assert config_from_dict(saved).adapt.method == "dann"
    assert not caplog.records  # a resumed run's own config.yaml does not warn again


def test_weight_decay_zero_means_none_even_for_adamw():
    from kerastl.optimizers import make_optimizer

    def built(finetune):
        st = config_from_dict({"train": {"finetune": finetune}}).train.finetune
        return make_optimizer(st.optimizer, 0.01, st.weight_decay)

    assert built({"optimizer": "adamw", "weight_decay": 0.0}).weight_decay == 0.0
    assert built({"optimizer": "adamw"}).weight_decay == pytest.approx(0.004)
    assert built({"optimizer": "sgd", "weight_decay": 0.01}).weight_decay == pytest.approx(0.01)
    assert built({"optimizer": "adam"}).weight_decay is None


def test_bn_auto_rule_for_every_stage():
    from kerastl.training.recipe import resolve_bn

    scratch = config_from_dict(dict(TINY, adapt={"method": "dann"}))
    assert [resolve_bn(scratch, s) for s in ("pretrain", "finetune", "adapt")] == ["train", "frozen", "train"]
    pretrained = config_from_dict(dict(TINY, model=dict(TINY["model"], weights="imagenet"), adapt={"method": "dann"}))
    assert [resolve_bn(pretrained, s) for s in ("pretrain", "finetune", "adapt")] == ["frozen"] * 3


def test_bad_augment_fails_before_any_training(tmp_path):
    import time

    data = dict(TINY, target=dict(TINY["target"], augment={"rotate": "lots"}))
    path = write_config(tmp_path / "c.yaml", data)
    start = time.time()
    result = CliRunner().invoke(main, ["train", path, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "target.augment.rotate: 'lots' is not accepted" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
    # Pretraining on the source would have come first; it never started.
    assert time.time() - start < 30


def test_cli_rejects_top_k_zero_and_workers_resume_of_a_single_process_run(tmp_path):
    from kerastl.config import dump_config

    result = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--top-k", "0"])
    assert result.exit_code == 2 and "--top-k" in result.output and "Traceback" not in result.output
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(config_from_dict(TINY)))
    result = CliRunner().invoke(main, ["train", "--workers", "2", "--resume", str(run)])
    assert result.exit_code == 2
    assert "started with distribute.strategy auto, not by --workers; resume it without --workers" in result.output


@pytest.mark.parametrize(
    "params, words",
    [
        ({"gama": 3}, "adapt.params.gama: 3 is not allowed; expected a parameter of dann: gamma, max_lambda"),
        ({"hidden": 1.5}, "adapt.params.hidden: 1.5 is not allowed; expected an integer"),
        ({"max_lambda": -1}, "adapt.params.max_lambda: -1 is not allowed; expected a number between 0.0 and 100.0"),
        ({"dropout": "half"}, "adapt.params.dropout: 'half' is not allowed; expected a number"),
    ],
)
def test_method_parameters_are_typed_and_ranged_at_config_time(params, words):
    with pytest.raises(ConfigError, match=words.replace(".", "\\.")):
        config_from_dict(dict(TINY, adapt={"method": "dann", "params": params}))


def test_a_bad_adapt_section_fails_without_importing_tensorflow(tmp_path):
    """Validation reads the TF-free method catalog: the mistake is reported at once."""
    import json
    import subprocess
    import sys

    path = write_config(tmp_path / "bad.yaml", dict(TINY, adapt={"method": "dann", "params": {"max_lambda": "x"}}))
    script = ("import json, sys; from click.testing import CliRunner; from kerastl.cli import main; "
              f"r = CliRunner().invoke(main, ['train', {path!r}]); "
              "print(json.dumps([r.exit_code, r.output, 'tensorflow' in sys.modules, 'keras' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    code, output, tf_loaded, keras_loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 2 and "adapt.params.max_lambda: 'x' is not allowed; expected a number" in output
    assert not tf_loaded and not keras_loaded


def test_every_committed_config_validates():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 11
    for path in configs:
        load_config(path)


@pytest.mark.parametrize("given, expected", [
    ((10, 150, None), (10, 150)),  # no budget: as configured
    ((10, 150, 3000), (20, 150)),  # 3000 steps in epochs of 150
    ((10, 150, 1000), (7, 142)),  # 1000 / 150 = 6.7 epochs -> 7 of 142 = 994 steps
    ((10, 150, 40), (1, 40)),  # less than one epoch: one shorter epoch
])
def test_a_step_budget_becomes_whole_epochs(given, expected):
    from kerastl.training.recipe import budget

    epochs, per_epoch = budget(*given)
    assert (epochs, per_epoch) == expected
    if given[2]:
        assert given[2] - epochs < epochs * per_epoch <= given[2]


def test_a_key_written_twice_is_an_error_naming_it_and_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: x\nmodel:\n  backbone: MobileNetV3Small\ntrain:\n  batch_size: 8\n"
                    "model:\n  weights: none\n")
    result = CliRunner().invoke(main, ["train", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{path}: key 'model' is given twice in the same section (lines 2 and 6)" in result.output
    path.write_text("model:\n  dropout: 0.1\n  dropout: 0.3\n")  # inside a section too
    with pytest.raises(ConfigError, match="key 'dropout' is given twice .*lines 2 and 3"):
        load_config(path)


def test_base_inheritance_deep_merges_and_reports_bad_bases(tmp_path):
    (tmp_path / "sub").mkdir()
    write_config(tmp_path / "root.yaml", {"name": "root", "source": {"dataset": "syndigits"},
                                          "model": {"dropout": 0.3, "hidden": [64, 32]}})
    write_config(tmp_path / "sub" / "mid.yaml", {"base": "../root.yaml", "model": {"hidden": [8]}})
    write_config(tmp_path / "sub" / "leaf.yaml", {"base": "mid.yaml", "name": "leaf", "source": None,
                                                  "model": {"pooling": "max"}})
    cfg = load_config(tmp_path / "sub" / "leaf.yaml")
    assert cfg.name == "leaf" and cfg.source is None  # a value, or null, replaces
    # A mapping merges key by key; a list replaces as a whole.
    assert (cfg.model.dropout, cfg.model.hidden, cfg.model.pooling) == (0.3, [8], "max")
    assert "base" not in yaml.safe_load(__import__("kerastl.config").config.dump_config(cfg))

    write_config(tmp_path / "a.yaml", {"base": "b.yaml"})
    write_config(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="makes a cycle"):
        load_config(tmp_path / "a.yaml")
    write_config(tmp_path / "c.yaml", {"base": "nowhere.yaml"})
    with pytest.raises(ConfigError, match=r"c.yaml: base: 'nowhere.yaml' not found"):
        load_config(tmp_path / "c.yaml")
    write_config(tmp_path / "d.yaml", {"base": ["a.yaml"]})
    with pytest.raises(ConfigError, match="expected the path of another config file"):
        load_config(tmp_path / "d.yaml")


def test_the_digits_configs_are_their_base_plus_a_few_lines():
    from pathlib import Path

    configs = Path(__file__).resolve().parent.parent / "configs"
    base = load_config(configs / "digits_base.yaml")
    mcd = load_config(configs / "digits_mcd.yaml")
    assert (mcd.adapt.method, mcd.model.bottleneck, mcd.model.hidden, mcd.adapt.params) == \
        ("mcd", None, [256, 256], {"num_k": 4})
    assert (mcd.adapt.steps, mcd.adapt.lr, mcd.source, mcd.train) == \
        (base.adapt.steps, base.adapt.lr, base.source, base.train)
    for path in configs.glob("digits_*.yaml"):
        if path.name != "digits_base.yaml":
            assert len(path.read_text().splitlines()) <= 12, path


def test_adapt_epochs_and_steps_together_are_an_error_naming_both():
    from pathlib import Path

    dann = Path(__file__).resolve().parent.parent / "configs" / "digits_dann.yaml"
    with pytest.raises(ConfigError, match=r"adapt.epochs: 2 is not allowed; expected null while "
                                          r"adapt.steps is set \(9000\)"):
        load_config(dann, ["adapt.epochs=2"])
    cfg = load_config(dann, ["adapt.epochs=2", "adapt.steps=null"])
    assert (cfg.adapt.epochs, cfg.adapt.steps) == (2, None)
