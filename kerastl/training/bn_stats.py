"""BatchNormalization statistics re-estimated on a split after training: AdaBN after
adaptation, and precise BN after a fine-tuning run too short for the moving averages to
forget where they started (see `kerastl.models.batchnorm`)."""

from __future__ import annotations

# A BN layer whose moving statistics still hold more than this share of their starting
# values after the run (momentum ** steps) is re-estimated with `train.precise_bn: auto`.
STALE_LIMIT = 0.05


def recalibrate_on_split(model, split, size: int, batch_size: int, num_classes: int,
                         only_trainable: bool = False) -> int:
    """Every image of `split` once, unaugmented (its labels are not read), through
    `recalibrate_batchnorm`. Returns the number of batches."""
    from kerastl.data.pipeline import build_dataset
    from kerastl.models.batchnorm import recalibrate_batchnorm

    images = (x for x, _ in build_dataset(split, size, batch_size, num_classes, cache=False))
    return recalibrate_batchnorm(model, images, only_trainable=only_trainable)


def precise_bn(ctx, split, updates: int) -> str | None:
    """Re-estimates the statistics of the BN layers that trained, on `split`, when
    `train.precise_bn` says so: `always`, or `auto` when after `updates` steps a layer's
    moving averages still hold more than STALE_LIMIT of their starting values. Returns the
    summary line, or None when nothing was done."""
    from kerastl.models.batchnorm import stale_share

    mode = ctx.cfg.train.precise_bn
    classifier = ctx.classifier
    stale = stale_share(classifier.model, updates)
    if mode == "never" or not stale or (mode == "auto" and stale <= STALE_LIMIT):
        return None
    recalibrate_on_split(classifier.model, split, classifier.input_size, ctx.cfg.train.batch_size,
                         ctx.target.num_classes, only_trainable=True)
    why = (f"after {updates} steps their moving averages still held {stale:.0%} of their starting values"
           if mode == "auto" else "train.precise_bn: always")
    line = f"  BN stats re-estimated on {len(split)} training images ({why})"
    ctx.announce("==" + line[1:])
    return line
