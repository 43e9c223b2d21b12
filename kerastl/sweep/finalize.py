"""The end of a sweep: criteria across trials, the pick, the ensemble of the top trials,
and that ensemble distilled into one model that ships like any run.

Distillation: the picked trial's model is trained further on the target's training images
(unlabelled; the held-back images stay out, they score) to match the ensemble's averaged
predictions (KL divergence), with the source's augmentation, its BatchNormalization
statistics following the target. The result is one model of the config's architecture:
`kerastl export` / `kerastl convert` take SWEEP/model like any run directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.sweep import study as studies
from kerastl.sweep.scoring import CRITERIA, criteria, load_domains, pick, regrets, top, trial_outputs
from kerastl.sweep.study import LOCK, RESULTS

log = logging.getLogger("kerastl")

MODEL_DIR = "model"
DISTILL_LR = 0.001


def finalize(sweep_dir: Path, plan, study, *, criterion: str, ensemble: int, distill_steps: int, echo=print):
    lock = Path(sweep_dir) / LOCK
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
    except FileExistsError:
        if time.time() - lock.stat().st_mtime < 3 * 3600:
            echo(f"sweep {sweep_dir}: another process is building the model ({lock}); its results will be "
                 f"in {Path(sweep_dir) / RESULTS}")
            return None
        lock.touch()  # left by a process that stopped: take over
    try:
        results = build(sweep_dir, study, criterion=criterion, ensemble=ensemble, distill_steps=distill_steps,
                        echo=echo)
    finally:
        lock.unlink(missing_ok=True)
    from kerastl.sweep.report import format_table, write_report

    echo(format_table(results))
    echo(f"  report   {write_report(sweep_dir, results)}")
    return results


def trial_rows(sweep_dir: Path, study) -> list[dict]:
    """The finished trials, in order, with their values and scores."""
    from optuna.trial import TrialState

    rows = []
    for t in sorted(studies.by_state(study)[TrialState.COMPLETE], key=lambda t: t.user_attrs["planned"]):
        rows.append({"trial": t.user_attrs["run"], "number": t.number, "config": t.params["config"],
                     "method": t.user_attrs.get("method"), "seed": t.params["seed"],
                     "values": {k: v for k, v in t.params.items() if k not in ("config", "seed")},
                     "seconds": t.user_attrs.get("seconds"), "scores": t.user_attrs["scores"],
                     "run_dir": f"{studies.TRIALS}/{t.user_attrs['run']}"})  # in the sweep folder
    return rows


def build(sweep_dir: Path, study, *, criterion: str, ensemble: int, distill_steps: int, echo=print) -> dict:
    from optuna.trial import TrialState

    started = time.time()
    rows = trial_rows(sweep_dir, study)
    done = [t for t in studies.by_state(study)[TrialState.COMPLETE] if t.datetime_start and t.datetime_complete]
    failed = [{"trial": t.user_attrs.get("run"), "error": t.user_attrs.get("error", "")}
              for t in studies.by_state(study)[TrialState.FAIL]]
    if not rows:
        from kerastl.errors import KerastlError

        raise KerastlError(f"sweep {sweep_dir}: no trial finished ({len(failed)} failed; see {sweep_dir}/logs)")
    sweep_dir = Path(sweep_dir)
    cfg = runs.read_config(sweep_dir / rows[0]["run_dir"])
    domains = load_domains(cfg)
    outputs = [trial_outputs(sweep_dir / r["run_dir"], domains, cfg.train.batch_size) for r in rows]
    scored = criteria([{"scores": r["scores"], "heldout": np.argmax(o["heldout_probs"], axis=1)
                        if "heldout_probs" in o else np.zeros(0)} for r, o in zip(rows, outputs)])
    for r, s in zip(rows, scored):
        r["scores"] = s
    chosen = pick(scored, criterion)
    if chosen is None:
        chosen = 0
        echo(f"  no trial has a finite {criterion}; keeping the first trial")
    members = top(scored, criterion, ensemble) or [chosen]
    labelled = "test_labels" in outputs[0]
    results = {"sweep": str(sweep_dir), "criterion": criterion, "trials": rows, "failed": failed,
               "pick": {"trial": rows[chosen]["trial"], "index": chosen},
               "regret": regrets(scored), "ensemble": {"members": [rows[i]["trial"] for i in members]}}
    if labelled:
        test = np.mean([outputs[i]["test_probs"] for i in members], axis=0)
        results["ensemble"]["target_test_accuracy"] = float(np.mean(np.argmax(test, 1) == outputs[0]["test_labels"]))
        results["best_oracle"] = max(r["scores"]["oracle"] for r in rows)
        results["pick"]["target_test_accuracy"] = rows[chosen]["scores"]["oracle"]
    results["model"] = distill(sweep_dir / MODEL_DIR, [sweep_dir / rows[i]["run_dir"] for i in members],
                               sweep_dir / rows[chosen]["run_dir"], domains, steps=distill_steps, echo=echo)
    results["timing"] = {
        # From the first trial's start to the last one's end, whichever processes ran them.
        "trials_wall_seconds": round(max(t.datetime_complete for t in done).timestamp()
                                     - min(t.datetime_start for t in done).timestamp(), 1) if done else None,
        "trial_seconds": [r["seconds"] for r in rows],
        "finalize_seconds": round(time.time() - started, 1),
    }
    results["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    runs.write_json(Path(sweep_dir) / RESULTS, results)
    return results


def distill(out: Path, members: list[Path], start: Path, domains, *, steps: int, echo=print) -> dict:
    """Trains `start`'s model to the members' averaged predictions on the target's training
    images and writes it as a run directory at `out`; returns its summary."""
    import keras
    import tensorflow as tf

    from kerastl.data.augment import build_augmenter
    from kerastl.data.pipeline import build_dataset, examples
    from kerastl.models.inference import over_dataset
    from kerastl.training.job import evaluate_splits

    cfg = runs.read_config(start)
    source, target = domains
    batch = cfg.train.batch_size
    student = runs.load_model(start)
    size = int(student.inputs[0].shape[1])
    train = target.splits.get("pool", target.splits["train"])
    ds = build_dataset(train, size, batch, target.num_classes, cache=False)
    models = [runs.load_model(m) for m in members]
    soft = np.mean([over_dataset(ds, m)["outputs"] for m in models], axis=0).astype(np.float32)
    heldout = target.splits.get("test") or train
    eval_ds = build_dataset(heldout, size, batch, target.num_classes, cache=False)
    ens = np.mean([over_dataset(eval_ds, m)["outputs"] for m in models], axis=0)
    before = over_dataset(eval_ds, student)["outputs"]  # the start model, before distillation

    keras.utils.set_random_seed(cfg.seed)
    student.trainable = True
    augmenter = build_augmenter(cfg.source.augment, "source") if cfg.source else None
    images = examples(train, size).map(lambda x, y: x)
    data = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(soft)).cache()
    data = data.shuffle(len(train), seed=cfg.seed, reshuffle_each_iteration=True).repeat().batch(batch)

    def prepare(i, xy):
        x = tf.cast(xy[0], tf.float32)
        if augmenter is not None:
            x = augmenter(x, tf.stack([tf.constant(cfg.seed, tf.int64), i]))
        return x, xy[1]

    data = data.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    student.compile(optimizer=keras.optimizers.SGD(DISTILL_LR, momentum=0.9, nesterov=True),
                    loss=keras.losses.KLDivergence(), jit_compile=False)
    epochs = 10 if steps >= 10 else 1
    echo(f"== distilling the ensemble of {len(members)} trial(s) into one model: {steps} steps on "
         f"{len(train)} unlabelled target images")
    started = time.time()
    fit = student.fit(data, steps_per_epoch=max(1, steps // epochs), epochs=epochs, verbose=0, shuffle=False)
    seconds = time.time() - started

    mine = over_dataset(eval_ds, student)["outputs"]
    agreement = float(np.mean(np.argmax(mine, 1) == np.argmax(ens, 1)))

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config_text = (start / runs.CONFIG).read_text()
    runs.atomic_write(out / runs.CONFIG, config_text)
    shutil.copy(start / runs.LABELS, out / runs.LABELS)
    shipped = runs.load_model(start)  # uncompiled: the file holds no optimizer state, as a run's
    shipped.set_weights(student.get_weights())
    runs.atomic_save(out / runs.MODEL, shipped.save)
    runs.write_history(out, [{"stage": "distill", "epoch": e + 1, "loss": float(v)}
                             for e, v in enumerate(fit.history["loss"])])
    metrics = evaluate_splits(student, {"target_val": (target, "val"), "target_test": (target, "test")},
                              size, batch, cfg.train.top_k)
    summary = {"members": [m.name for m in members], "started_from": start.name, "steps": steps,
               "seconds": round(seconds, 1), "agreement_with_ensemble": agreement,
               "agreement_before": float(np.mean(np.argmax(before, 1) == np.argmax(ens, 1))),
               "size_bytes": (out / runs.MODEL).stat().st_size,
               "latency_ms": latency_ms(student, size)}
    summary["ensemble_latency_ms"] = summary["latency_ms"] * len(members)
    summary["ensemble_size_bytes"] = sum((m / runs.MODEL).stat().st_size for m in members)
    if "target_test" in metrics:
        summary["target_test_accuracy"] = metrics["target_test"]["accuracy"]
    metrics["sweep_model"] = summary
    runs.write_json(out / runs.METRICS, metrics)
    return summary


def latency_ms(model, size: int, repeats: int = 30) -> float:
    """Median milliseconds of one image through the Keras model (batch 1, traced)."""
    from kerastl.models.inference import infer

    x = np.zeros((1, size, size, 3), np.float32)
    infer(model, x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.asarray(infer(model, x))
        times.append(time.perf_counter() - t)
    return round(1000 * float(np.median(times)), 3)


__all__ = ["finalize", "build", "distill", "CRITERIA"]
