"""The `kerastl train` job, top to bottom:

    strategy and precision -> load domains -> write run inputs -> build classifier
    -> checkpoint -> stage (finetune or adapt) -> evaluate -> save run

Fine-tuning (`training/finetune.py`) and adaptation (`training/adapt.py`) are sibling
stages with one interface: `run(StageContext) -> StageResult`. After every epoch the
checkpoint is replaced atomically, so `--resume` continues from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.config import Config, dump_config
from kerastl.errors import DataError, KerastlError

log = logging.getLogger("kerastl")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    history: list = field(default_factory=list)
    # Epochs trained by this call (fewer than the history's rows when it resumed a run).
    epochs_run: int = 0


def train(cfg: Config | None = None, *, out: str | None = None, resume: str | None = None,
          quiet: bool = False, echo=print) -> RunResult:
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
        return run_job(runs.read_config(run_dir), run_dir, resume=True, quiet=quiet, echo=echo)
    assert cfg is not None
    run_dir = runs.new_run_dir(cfg.name, out)
    runs.atomic_write(run_dir / runs.CONFIG, dump_config(cfg))
    try:
        return run_job(cfg, run_dir, resume=False, quiet=quiet, echo=echo)
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
            cfg = runs.read_config(run)
            if (run / runs.CHECKPOINT).exists():
                shutil.copytree(run / runs.CHECKPOINT, scratch / runs.CHECKPOINT)
        runs.atomic_write(scratch / runs.CONFIG, dump_config(cfg))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, report=False))  # the chief's job
        return run_job(cfg, scratch, resume=bool(resume), quiet=quiet, echo=echo)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_job(cfg: Config, run_dir: Path, *, resume: bool, quiet: bool, echo) -> RunResult:
    import keras

    from kerastl.data.augment import build_augmenter
    from kerastl.data.domain import load_domain
    from kerastl.models.factory import build_classifier, restrict_classes, validate_unfreeze
    from kerastl.training import adapt, finetune
    from kerastl.training.checkpoint import Checkpoint
    from kerastl.training.distribute import (configure_threads, describe, make_strategy, precision,
                                             sync_batchnorm)
    from kerastl.training.stage import StageContext

    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    # === Strategy and precision ===
    # The strategy first: MultiWorkerMirroredStrategy must exist before other TF work.
    strategy = make_strategy(cfg.distribute)
    with precision(cfg.train.mixed_precision), strategy.scope():  # models, optimizers, metrics made inside
        checkpoint = Checkpoint(run_dir)
        state = checkpoint.load_state() if resume else None
        if resume and state is None:
            log.info("no checkpoint in %s: starting it from the beginning", run_dir)
        keras.utils.set_random_seed(cfg.seed)
        started = time.time()

        # === Domains ===
        # Augmenters first: a bad `augment` value fails here, not after a stage trained.
        augmenters = {"source": build_augmenter(cfg.source.augment, "source") if cfg.source else None,
                      "target": build_augmenter(cfg.target.augment, "target")}
        target = load_domain(cfg.target, cfg.data_seed, "target")
        source = load_domain(cfg.source, cfg.data_seed, "source") if cfg.source is not None else None
        target, partial = _check_classes(cfg, source, target)
        # What the saved model outputs: the target's own classes in a partial transfer.
        restricted = partial is not None and cfg.model.partial_outputs == "target"

        # === Run inputs ===
        skipped = (source.skipped if source else []) + target.skipped
        runs.atomic_write(run_dir / runs.SKIPPED, "".join(f"{p}\t{r}\n" for p, r in skipped))
        if skipped:
            log.warning("%d image file(s) could not be decoded and were left out; see %s",
                        len(skipped), run_dir / runs.SKIPPED)
        outputs = partial.own.class_names if restricted else target.class_names
        runs.atomic_write(run_dir / runs.LABELS, "\n".join(outputs) + "\n")

        # === Classifier ===
        classifier = build_classifier(cfg.model, target.num_classes)
        validate_unfreeze(classifier.backbone, cfg.model.unfreeze)
        replicas = int(strategy.num_replicas_in_sync)
        if replicas > 1:
            if cfg.train.batch_size % replicas:
                raise KerastlError(
                    f"train.batch_size: {cfg.train.batch_size} is the global batch and must split evenly "
                    f"over the {replicas} replicas")
            sync_batchnorm(classifier.model, cfg.distribute.sync_batchnorm)

        # === Checkpoint ===
        if state:
            checkpoint.restore_classifier(classifier.model, state)
        history = list(state["history"]) if state else []
        resumed_epochs = epochs_in(history)

        # === Stage ===
        stage = adapt if cfg.adapt is not None else finetune
        ctx = StageContext(cfg=cfg, run_dir=run_dir, classifier=classifier, source=source, target=target,
                           augmenters=augmenters, checkpoint=checkpoint, state=state, history=history,
                           quiet=quiet, echo=echo, target_classes=partial.indices if partial else None)
        result = stage.run(ctx)

        # === Evaluate ===
        model, shipped_target = classifier.model, target
        if restricted:
            model, shipped_target = restrict_classes(classifier.model, partial.indices), partial.own
        metrics = {}
        if source is not None:
            metrics = evaluate_splits(classifier.model, {"source_val": (source, "val")}, classifier.input_size,
                                      cfg.train.batch_size, cfg.train.top_k)
        metrics.update(evaluate_splits(model, {"target_val": (shipped_target, "val"),
                                               "target_test": (shipped_target, "test")},
                                       classifier.input_size, cfg.train.batch_size, cfg.train.top_k))
        if result.report is not None:
            metrics["adaptation"] = result.report
        digest = weights_digest(classifier.model)
        metrics["distribute"] = dict(describe(strategy), mixed_precision=cfg.train.mixed_precision,
                                     jit_compile=cfg.train.jit_compile, weights_sha256=digest)

        # === Save run ===
        sync_batchnorm(classifier.model, False)  # the saved model runs anywhere, one device
        runs.atomic_save(run_dir / runs.MODEL, model.save)
        runs.write_json(run_dir / runs.METRICS, metrics)
        report = write_run_report(cfg, run_dir, model, source, shipped_target) if cfg.train.report else None

    epochs_run = epochs_in(history) - resumed_epochs
    lines = [
        "",
        f"kerastl run {run_dir}",
        f"  model    {classifier.spec.name} at {classifier.input_size}x{classifier.input_size}, "
        f"weights={cfg.model.weights}, {len(outputs)} classes"
        + (f" (the target's, of the source's {target.num_classes})" if restricted else ""),
        f"  trained  {result.trained}",
        f"  time     {time.time() - started:.0f} s",
    ]
    if partial is not None:
        lacking = [c for c in target.class_names if c not in partial.own.class_names]
        lines.append(f"  classes  partial transfer: the target has {len(partial.own.class_names)} of the source's "
                     f"{target.num_classes} classes (it lacks {lacking[:10]}{'...' if len(lacking) > 10 else ''})")
    if resumed_epochs:
        lines.append(f"  resumed  after {resumed_epochs} finished epoch(s); {epochs_run} epoch(s) trained now")
    lines += result.lines
    for split, m in metrics.items():
        if split in ("adaptation", "distribute"):
            continue
        lines.append(f"  {split:<12} accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  (n={m['num_examples']})")
    if not target.labelled:
        lines.append(f"  target       {sum(len(s) for s in target.splits.values())} images without labels: "
                     "no target accuracy to report (see report.html and kerastl predict)")
    warning = chance_warning(history, metrics, len(outputs))
    if warning:  # in the summary, which shows even with --quiet
        lines.append(f"  warning  {warning}")
    if skipped:
        lines.append(f"  skipped  {len(skipped)} undecodable file(s): {run_dir / runs.SKIPPED}")
    dist = metrics["distribute"]
    if dist["replicas"] > 1 or dist["workers"] > 1:
        lines.append(f"  devices  {dist['strategy']}: {dist['replicas']} replica(s) on {dist['workers']} worker(s); "
                     f"weights sha256 {digest[:16]}")
    lines.append(f"  saved    {run_dir / runs.MODEL}, {runs.METRICS}, {runs.HISTORY}, logs/")
    if report is not None:
        lines.append(f"  report   {report}")
    # The summary shows even with --quiet, which only silences progress bars.
    echo("\n".join(lines))
    return RunResult(run_dir=run_dir, metrics=metrics, history=history, epochs_run=epochs_run)


def chance_warning(history: list, metrics: dict, num_classes: int) -> str | None:
    """A run that learned its training images but evaluates at chance: said, not left to be
    found. Typical causes: BatchNormalization statistics that do not match the weights, a
    preprocessing mismatch, or a target far from what was trained on."""
    chance = 1.0 / num_classes
    rows = [r for r in history if r.get("accuracy") is not None]
    train_acc = float(rows[-1]["accuracy"]) if rows else 0.0
    split = "target_val" if "target_val" in metrics else "target_test"
    if split not in metrics or train_acc < max(0.5, 2 * chance):
        return None
    acc = metrics[split]["accuracy"]
    if acc > 1.5 * chance:
        return None
    return (f"{split} accuracy {acc:.3f} is at chance ({chance:.3f} for {num_classes} classes) while training "
            f"accuracy is {train_acc:.3f}: the model predicts alike for every image. Check model.bn_momentum "
            "and train.precise_bn (BatchNorm statistics), or train longer")


def epochs_in(history: list) -> int:
    """Epochs the history's rows cover: a row may end several short epochs (see
    `train.eval_every_steps`), so the last `epoch` of each stage/phase is counted."""
    last = {}
    for row in history:
        key = (row.get("stage"), row.get("phase"))
        last[key] = max(last.get(key, 0), int(row.get("epoch", 0)))
    return sum(last.values())


def write_run_report(cfg, run_dir, model, source, target):
    """RUN/report.html, or None with a warning when it cannot be made: the run itself is
    saved by then and stays as it is (`kerastl report RUN` can try again)."""
    from kerastl.evaluation.report import write_report

    try:
        return write_report(run_dir, cfg=cfg, model=model, source=source, target=target)
    except Exception as err:  # noqa: BLE001 (a report must never cost the user the run)
        log.warning("report.html was not written (%s: %s); the run is saved; try `kerastl report %s`",
                    type(err).__name__, err, run_dir)
        return None


@dataclass
class Partial:
    """A target whose classes are some of the source's: `own` is the target as loaded (its
    own class numbering), `indices` its classes' positions among the source's."""

    own: object
    indices: list


def _check_classes(cfg, source, target):
    """(target to train with, Partial or None). The target takes the source's class names
    when it has no labels of its own (an adaptation target), and the source's numbering when
    its classes are some of the source's (partial transfer); a DataError when it has a class
    the source lacks (open set) or, without a source section, nothing to check."""
    if not target.labelled:
        if cfg.adapt is None or source is None:
            raise DataError(f"target.dataset: {target.name!r} holds images without class sub-folders, so without "
                            "labels: that can only be the target of adaptation (a source section and an adapt "
                            "section); to fine-tune, put the images in one sub-folder per class")
        log.info("target %s: %d images without labels; the source's %d classes", target.name,
                 sum(len(s) for s in target.splits.values()), source.num_classes)
        return dataclasses.replace(target, class_names=list(source.class_names)), None
    if source is None or source.class_names == target.class_names:
        return target, None
    s, t = source.class_names, target.class_names
    unknown = [c for c in t if c not in s]
    if unknown:
        raise DataError(
            f"target.dataset {target.name!r} has classes the source lacks: {unknown[:10]}"
            f"{'...' if len(unknown) > 10 else ''} (source.dataset {source.name!r} has {s[:12]}"
            f"{'...' if len(s) > 12 else ''}). Transfer maps the target's classes onto the source's by name, "
            "and an open-set target (classes unknown to the source) is not supported: rename the target's "
            "class folders to the source's names, or keep only shared ones with target.classes")
    indices = [s.index(c) for c in t]
    splits = {name: split.relabel(np.asarray(indices)) for name, split in target.splits.items()}
    if len(t) == len(s):  # the same classes in another order: the source's order it is
        return dataclasses.replace(target, class_names=list(s), splits=splits), None
    log.info("partial transfer: the target has %d of the source's %d classes; %s", len(t), len(s),
             "the model is evaluated and saved with the target's classes" if cfg.model.partial_outputs == "target"
             else "the model keeps every source class (model.partial_outputs: source)")
    return dataclasses.replace(target, class_names=list(s), splits=splits), Partial(target, indices)


def evaluate_splits(model, domains: dict, size: int, batch_size: int, top_k: int) -> dict:
    """metrics.json content: {source_val, target_val, target_test} -> summary metrics."""
    from kerastl.data.pipeline import build_dataset
    from kerastl.evaluation.metrics import summary_metrics
    from kerastl.models.inference import predict_split

    out = {}
    for name, (domain, split_name) in domains.items():
        split = domain.splits.get(split_name)
        if split is None or len(split) == 0 or not domain.labelled:  # no labels: nothing to score
            continue
        ds = build_dataset(split, size, batch_size, domain.num_classes, cache=False)
        probs, labels = predict_split(model, ds)
        out[name] = summary_metrics(probs, labels, top_k)
    return out


def weights_digest(model) -> str:
    """sha256 of all weights: equal on every worker of a synchronous run."""
    import hashlib

    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()
