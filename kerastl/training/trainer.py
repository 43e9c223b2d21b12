"""Pretrain on the source, fine-tune on the target, evaluate: the `kerastl train` job.

A run is a list of phases, each one `model.fit` call:

    pretrain/head, pretrain/full   (only when `source` is given)
    finetune/head, finetune/full

`head` trains the new head with the backbone frozen; `full` unfreezes the backbone as
`model.unfreeze` says, with the backbone's learning rate scaled by `backbone_lr_mult`.
Each phase has fresh optimizers and its own warmup + cosine schedule. After every epoch
the checkpoint (classifier weights, optimizer state, progress, history) is replaced
atomically, so `--resume` continues from the last finished epoch.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.config import Config, dump_config, load_config
from kerastl.errors import DataError, KerastlError

log = logging.getLogger("kerastl")


@dataclass
class Phase:
    stage: str  # pretrain | finetune
    name: str  # head | full
    epochs: int
    policy: object  # "frozen" or model.unfreeze

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.name}"


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    history: list = field(default_factory=list)
    # Epochs trained by this call (fewer than the history's rows when it resumed a run).
    epochs_run: int = 0


def plan_phases(cfg: Config) -> list[Phase]:
    if cfg.adapt is not None:
        return []  # the adapt stage replaces pretrain + finetune
    phases = []
    stages = ([("pretrain", cfg.train.pretrain)] if cfg.source is not None else []) + [
        ("finetune", cfg.train.finetune)
    ]
    for stage, st in stages:
        if st.head_epochs:
            phases.append(Phase(stage, "head", st.head_epochs, "frozen"))
        if st.epochs:
            phases.append(Phase(stage, "full", st.epochs, cfg.model.unfreeze))
    return phases


def _check_classes(source, target):
    if source.class_names != target.class_names:
        s, t = source.class_names, target.class_names
        raise DataError(
            f"source and target classes differ: source.dataset {source.name!r} has "
            f"{s[:12]}{'...' if len(s) > 12 else ''}, target.dataset {target.name!r} has "
            f"{t[:12]}{'...' if len(t) > 12 else ''}; transfer needs the same class names "
            f"(only in source: {sorted(set(s) - set(t))[:10]}, only in target: "
            f"{sorted(set(t) - set(s))[:10]})"
        )


def _verbosity(quiet: bool) -> int:
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def evaluate_splits(classifier, domains: dict, size: int, batch_size: int, top_k: int) -> dict:
    """metrics.json content: {source_val, target_val, target_test} -> summary metrics."""
    from kerastl.data.pipeline import build_dataset
    from kerastl.evaluation.metrics import predict_split, summary_metrics

    out = {}
    for name, (domain, split_name) in domains.items():
        split = domain.splits.get(split_name)
        if split is None or len(split) == 0:
            continue
        ds = build_dataset(split, size, batch_size, domain.num_classes, cache=False)
        probs, labels = predict_split(classifier, ds)
        out[name] = summary_metrics(probs, labels, top_k)
    return out


def train(
    cfg: Config | None = None,
    *,
    out: str | None = None,
    resume: str | None = None,
    quiet: bool = False,
    echo=print,
) -> RunResult:
    """Runs a whole training job and returns its run directory and metrics.

    Args:
        cfg: validated config; ignored with `resume`, which reads the run's own config.
        out: run directory to create (default saved_models/<name>-<timestamp>).
        resume: an interrupted run directory to continue from its last finished epoch.
        quiet: no progress bars.
        echo: where the one-screen summary goes.
    """
    from kerastl.training.distribute import is_chief

    if not is_chief():
        return _train_non_chief(cfg, out=out, resume=resume, quiet=quiet, echo=echo)
    if resume:
        run_dir = runs.require_run(resume, need=(runs.CONFIG,))
        cfg = load_config(run_dir / runs.CONFIG)
        return _train(cfg, run_dir, resume=True, quiet=quiet, echo=echo)
    assert cfg is not None
    run_dir = runs.new_run_dir(cfg.name, out)
    runs.atomic_write(run_dir / runs.CONFIG, dump_config(cfg))
    try:
        return _train(cfg, run_dir, resume=False, quiet=quiet, echo=echo)
    except KerastlError:
        # A mistake found before the first epoch leaves no half-made run behind.
        if not (run_dir / runs.CHECKPOINT).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train_non_chief(cfg, *, out, resume, quiet, echo) -> RunResult:
    """A worker other than the chief: same computation, files in a scratch folder.

    Only the chief writes the run directory. With --resume, this worker starts from the
    chief's checkpoint, so the run directory must be on storage every worker can read.
    """
    import tempfile

    from kerastl.training.distribute import task_name

    scratch = Path(tempfile.mkdtemp(prefix=f"kerastl-{task_name()}-"))
    try:
        if resume:
            run = runs.require_run(resume, need=(runs.CONFIG,))
            cfg = load_config(run / runs.CONFIG)
            if (run / runs.CHECKPOINT).exists():
                shutil.copytree(run / runs.CHECKPOINT, scratch / runs.CHECKPOINT)
        runs.atomic_write(scratch / runs.CONFIG, dump_config(cfg))
        return _train(cfg, scratch, resume=bool(resume), quiet=quiet, echo=echo)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def weights_digest(model) -> str:
    """sha256 of all weights: equal on every worker of a synchronous run."""
    import hashlib

    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def _train(cfg: Config, run_dir: Path, *, resume: bool, quiet: bool, echo) -> RunResult:
    from kerastl.training.distribute import make_strategy, precision

    # The strategy first: MultiWorkerMirroredStrategy must exist before other TF work.
    strategy = make_strategy(cfg.distribute)
    with precision(cfg.train.mixed_precision), strategy.scope():
        return _train_in_scope(cfg, run_dir, strategy, resume=resume, quiet=quiet, echo=echo)


def _train_in_scope(cfg: Config, run_dir: Path, strategy, *, resume: bool, quiet: bool, echo) -> RunResult:
    """The whole job inside the strategy's scope: models, optimizers, metrics made here."""
    import keras

    from kerastl.data.augment import build_augmenter
    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import build_dataset, cache_path, class_weights, steps_per_epoch
    from kerastl.models.factory import build_classifier, set_trainable, validate_unfreeze
    from kerastl.training.distribute import describe, shard_by_data, sync_batchnorm
    from kerastl.training.checkpoint import Checkpoint, checkpoint_callback
    from kerastl.training.recipe import make_optimizer, make_schedule, resolve_bn
    from kerastl.training.transfer_model import TransferModel

    checkpoint = Checkpoint(run_dir)
    state = checkpoint.load_state() if resume else None
    if resume and state is None:
        log.info("no checkpoint in %s: starting it from the beginning", run_dir)

    keras.utils.set_random_seed(cfg.seed)
    started = time.time()

    # === Data ===
    # Augmenters first: a bad `augment` value fails here, not after an earlier stage trained.
    augmenters = {"source": build_augmenter(cfg.source.augment, "source") if cfg.source else None,
                  "target": build_augmenter(cfg.target.augment, "target")}
    target = load_domain(cfg.target, cfg.seed, "target")
    source = load_domain(cfg.source, cfg.seed, "source") if cfg.source is not None else None
    if source is not None:
        _check_classes(source, target)
    skipped = (source.skipped if source else []) + target.skipped
    runs.atomic_write(run_dir / runs.SKIPPED, "".join(f"{p}\t{r}\n" for p, r in skipped))
    if skipped:
        log.warning("%d image file(s) could not be decoded and were left out; see %s",
                    len(skipped), run_dir / runs.SKIPPED)
    runs.atomic_write(run_dir / runs.LABELS, "\n".join(target.class_names) + "\n")

    # === Model ===
    classifier, spec, size = build_classifier(cfg.model, target.num_classes)
    validate_unfreeze(classifier, cfg.model.unfreeze)
    replicas = int(strategy.num_replicas_in_sync)
    if replicas > 1:
        if cfg.train.batch_size % replicas:
            raise KerastlError(
                f"train.batch_size: {cfg.train.batch_size} is the global batch and must split evenly "
                f"over the {replicas} replicas")
        sync_batchnorm(classifier, cfg.distribute.sync_batchnorm)
    phases = plan_phases(cfg)
    history: list[dict] = list(state["history"]) if state else []
    resumed_rows = len(history)
    done = set(state["done"]) if state else set()
    if state:
        checkpoint.restore_classifier(classifier, state)

    domains = {"source": source, "target": target}
    batch = cfg.train.batch_size
    adaptation = None
    if cfg.adapt is not None:
        from kerastl.training.adapt import adapt

        adaptation = adapt(
            cfg, run_dir, source, target, classifier, size, checkpoint, state, history,
            augmenters, quiet, echo, _verbosity(quiet), cfg.train.jit_compile,
        )
    for index, phase in enumerate(phases):
        if phase.key in done:
            continue
        domain = domains["source" if phase.stage == "pretrain" else "target"]
        data_cfg = cfg.source if phase.stage == "pretrain" else cfg.target
        st = getattr(cfg.train, phase.stage)
        train_split = domain.splits["train"]
        val_split = domain.splits.get("val")
        steps = steps_per_epoch(train_split, batch)
        # A phase's BN policy: frozen backbone -> inference BN, else as resolved.
        set_trainable(classifier, phase.policy, resolve_bn(cfg, phase.stage))
        weights = class_weights(train_split.labels, domain.num_classes) if st.class_weights else None

        in_progress = state is not None and state.get("phase") == phase.key
        initial_epoch = state["epoch"] + 1 if in_progress else 0
        seed = cfg.seed * 31 + index
        train_ds = build_dataset(
            train_split, size, batch, domain.num_classes, training=True, seed=seed,
            augmenter=augmenters["source" if phase.stage == "pretrain" else "target"],
            cache=cache_path(data_cfg.cache, phase.stage, "train", size), epochs=phase.epochs, initial_epoch=initial_epoch,
            weights=weights,
        )
        val_ds = (
            build_dataset(val_split, size, batch, domain.num_classes,
                          cache=cache_path(data_cfg.cache, phase.stage, "val", size))
            if val_split is not None and len(val_split)
            else None
        )

        total = steps * phase.epochs
        warmup = int(round(st.warmup_epochs * steps))
        lr = st.lr
        model = TransferModel(classifier)
        head_opt = make_optimizer(st.optimizer, make_schedule(lr, total, warmup), st.weight_decay)
        bb_opt = None
        if phase.name == "full" and st.backbone_lr_mult != 1.0:
            bb_opt = make_optimizer(st.optimizer, make_schedule(lr * st.backbone_lr_mult, total, warmup),
                                    st.weight_decay)
        model.compile(
            optimizer=head_opt,
            backbone_optimizer=bb_opt,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=st.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=cfg.train.jit_compile,
        )

        def on_epoch_end(epoch, logs, phase=phase):
            row = {"stage": phase.stage, "phase": phase.name, "epoch": epoch + 1}
            row.update({k: float(v) for k, v in logs.items()})
            history.append(row)
            runs.write_history(run_dir, history)

        def state_of(epoch, phase=phase):
            finished = {phase.key} if epoch + 1 == phase.epochs else set()
            return {"phase": phase.key, "epoch": epoch, "done": sorted(done | finished), "history": history}

        if initial_epoch < phase.epochs:
            if not quiet:
                trainable = sum(int(np.prod(v.shape)) for v in classifier.trainable_variables)
                echo(f"== {phase.key}: {phase.epochs} epoch(s) on {domain.name} "
                     f"({len(train_split)} images), {trainable:,} trainable parameters"
                     + (f", resuming at epoch {initial_epoch + 1}" if initial_epoch else ""))
            model.fit(
                shard_by_data(train_ds),
                epochs=phase.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps,
                validation_data=shard_by_data(val_ds),
                shuffle=False,  # the dataset shuffles per epoch itself (see build_dataset)
                verbose=_verbosity(quiet),
                callbacks=[
                    keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end),
                    checkpoint_callback(checkpoint, classifier, phase.key, state_of),
                    keras.callbacks.TensorBoard(str(run_dir / "logs" / phase.key.replace("/", "_"))),
                    keras.callbacks.TerminateOnNaN(),
                ],
            )
            if any(not np.isfinite(v) for v in history[-1].values() if isinstance(v, float)):
                raise KerastlError(
                    f"training diverged in {phase.key} (a loss became NaN or infinite); "
                    f"lower train.{phase.stage}.lr (now {lr})"
                )
        done.add(phase.key)
        state = None

    # === Evaluate and save ===
    eval_domains = {"target_val": (target, "val"), "target_test": (target, "test")}
    if source is not None:
        eval_domains = {"source_val": (source, "val"), **eval_domains}
    metrics = evaluate_splits(classifier, eval_domains, size, batch, cfg.train.top_k)
    if adaptation is not None:
        metrics["adaptation"] = adaptation
    digest = weights_digest(classifier)
    metrics["distribute"] = dict(describe(strategy), mixed_precision=cfg.train.mixed_precision,
                                 jit_compile=cfg.train.jit_compile, weights_sha256=digest)
    sync_batchnorm(classifier, False)  # the saved model runs anywhere, one device
    runs.atomic_save(run_dir / runs.MODEL, classifier.save)
    runs.write_json(run_dir / runs.METRICS, metrics)

    elapsed = time.time() - started
    epochs_run = len(history) - resumed_rows
    # The summary shows even with --quiet, which only silences progress bars.
    lines = [
        "",
        f"kerastl run {run_dir}",
        f"  model    {spec.name} at {size}x{size}, weights={cfg.model.weights}, "
        f"{target.num_classes} classes",
        "  trained  " + (
            f"adapt ({cfg.adapt.method}) {source.name} ({len(source.splits['train'])} labelled) -> "
            f"{target.name} ({len(target.splits['train'])} unlabelled)"
            if cfg.adapt else
            (f"pretrain on {source.name} ({len(source.splits['train'])} images), " if source else "")
            + f"finetune on {target.name} ({len(target.splits['train'])} images)"
        ),
        f"  time     {elapsed:.0f} s",
    ]
    if resumed_rows:
        lines.append(f"  resumed  after {resumed_rows} finished epoch(s); {epochs_run} epoch(s) trained now")
    if adaptation is not None:
        sel = adaptation["selection"]
        lines.append(f"  adapted  {adaptation['method']}; kept epoch {sel['epoch']} by {sel['criterion']}; "
                     f"proxy A-distance {adaptation.get('proxy_a_distance_before', float('nan')):.2f} -> "
                     f"{adaptation['proxy_a_distance_after']:.2f} (embedding.png)")
    for split, m in metrics.items():
        if split in ("adaptation", "distribute"):
            continue
        lines.append(f"  {split:<12} accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  (n={m['num_examples']})")
    if skipped:
        lines.append(f"  skipped  {len(skipped)} undecodable file(s): {run_dir / runs.SKIPPED}")
    dist = metrics["distribute"]
    if dist["replicas"] > 1 or dist["workers"] > 1:
        lines.append(f"  devices  {dist['strategy']}: {dist['replicas']} replica(s) on {dist['workers']} worker(s); "
                     f"weights sha256 {digest[:16]}")
    lines.append(f"  saved    {run_dir / runs.MODEL}, {runs.METRICS}, {runs.HISTORY}, logs/")
    echo("\n".join(lines))
    return RunResult(run_dir=run_dir, metrics=metrics, history=history, epochs_run=epochs_run)
