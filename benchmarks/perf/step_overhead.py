"""kerastl's training step against a bare compiled step, with TensorFlow's default
threads and with one thread per op; and XLA.

    python benchmarks/perf/step_overhead.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics

from common import default_config, interleaved, source_split, threads


def _bare_and_kerastl(cfg, batch: int, steps: int, rounds: int, jit: bool, diagnose: bool = True) -> dict:
    """ms/step: a plain compiled Keras step on tensors in memory, against kerastl's
    fine-tuning step (TransferModel) fed by kerastl's input pipeline (cache, shuffle,
    augmentation on the fly) for the same model and batch, measured in interleaved rounds.
    The overhead is the median over rounds of kerastl's time over the bare time of the
    same round."""
    import keras
    import tensorflow as tf

    from kerastl.data.augment import build_augmenter
    from kerastl.data.pipeline import build_dataset, resize, to_rgb
    from kerastl.models.factory import build_classifier
    from kerastl.training.transfer_model import TransferModel

    size = cfg.model.input_size
    split, domain = source_split(cfg, batch * (steps + 2))
    passes = rounds + 2  # each round's fit starts a new iterator over the finite pipeline

    # Bare: the classifier compiled as Keras compiles it, fed the resized images as one
    # in-memory tensor (repeated), no augmentation.
    x = resize(to_rgb(tf.convert_to_tensor(split.images)), size)
    y = tf.one_hot(split.labels, domain.num_classes)
    tensors = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()

    def bare_model(**compile_kwargs):
        keras.utils.set_random_seed(0)
        bare = build_classifier(cfg.model, domain.num_classes).model
        bare.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", **compile_kwargs)
        return bare

    # kerastl: what the pretrain phase fits.
    keras.utils.set_random_seed(0)
    model = TransferModel(build_classifier(cfg.model, domain.num_classes))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    data = build_dataset(split, size, batch, domain.num_classes, training=True,
                         augmenter=build_augmenter(cfg.source.augment, "source"), epochs=passes)
    contenders = {"bare": (bare_model(), tensors), "kerastl": (model, data)}
    if jit:
        contenders["bare_xla"] = (bare_model(jit_compile=True), tensors)
    if diagnose:
        # Where a difference would come from: kerastl's step on the in-memory tensors, and
        # its pipeline without augmentation.
        contenders["kerastl_step_on_tensors"] = (model, tensors)
        contenders["kerastl_no_augment"] = (
            model, build_dataset(split, size, batch, domain.num_classes, training=True, epochs=passes))
    times = interleaved(contenders, steps=steps, rounds=rounds)
    out = {f"{name}_ms": statistics.median(t) for name, t in times.items()}
    ratios = [k / b for k, b in zip(times["kerastl"], times["bare"])]
    out.update(overhead=statistics.median(ratios) - 1, overhead_range=[min(ratios) - 1, max(ratios) - 1],
               rounds_ms={name: [round(v, 1) for v in t] for name, t in times.items()}, steps_per_round=steps)
    return out


def step_overhead(quick: bool) -> dict:
    """kerastl's training step against a bare compiled step, with TensorFlow's default
    threads and with one thread per op; and XLA."""
    import tensorflow as tf

    intra = int(os.environ.get("KERASTL_BENCH_INTRA", "0"))
    threads(intra)
    if os.environ.get("KERASTL_BENCH_SIZE") == "224":
        cfg = default_config(224)
        result = _bare_and_kerastl(cfg, batch=32, steps=4 if quick else 8, rounds=3 if quick else 5, jit=not quick,
                                   diagnose=not quick)
    else:
        cfg = default_config()
        # (row 2c reads XLA's time with one thread per op; --quick measures only that one)
        result = _bare_and_kerastl(cfg, batch=64, steps=30, rounds=5 if quick else 9,
                                   jit=intra == 1 or not quick, diagnose=not quick)
    result.update(intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads() or "default",
                  input_size=cfg.model.input_size)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images, one repeat")
    print(json.dumps(step_overhead(parser.parse_args().quick)), flush=True)
