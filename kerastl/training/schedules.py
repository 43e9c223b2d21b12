"""Learning-rate schedules whose numbers are variables, so that one traced train step
serves several phases."""

from __future__ import annotations

import math

import keras
from keras import ops


def warmup_bounds(steps: int, warmup_steps: int) -> tuple[int, int]:
    """(steps, warmup steps) as a warmup + cosine schedule can take them: at least one
    step, and the warmup ends before the last step."""
    steps = max(int(steps), 1)
    return steps, (min(int(warmup_steps), steps - 1) if steps > 1 else 0)


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `lr` over `warmup_steps`, then cosine decay to 0 at `steps`
    (Keras' CosineDecay with warmup). Its three numbers are variables: `reset` sets them
    for the next phase and a train step traced with the schedule stays valid, so
    fine-tuning can reuse the traced step across phases (tracing a MobileNetV3 step can cost
    more than a short fine-tuning itself)."""

    def __init__(self, lr: float, steps: int, warmup_steps: int):
        self.peak = keras.Variable(0.0, trainable=False, name="lr_peak")
        self.steps = keras.Variable(1.0, trainable=False, name="lr_steps")
        self.warmup = keras.Variable(0.0, trainable=False, name="lr_warmup")
        self.reset(lr, steps, warmup_steps)

    def reset(self, lr: float, steps: int, warmup_steps: int):
        steps, warmup_steps = warmup_bounds(steps, warmup_steps)
        self.values = (float(lr), steps, warmup_steps)
        self.peak.assign(float(lr))
        self.steps.assign(float(steps))
        self.warmup.assign(float(warmup_steps))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak, steps, warmup = (ops.convert_to_tensor(v) for v in (self.peak, self.steps, self.warmup))
        rising = peak * step / ops.maximum(warmup, 1.0)
        progress = ops.minimum(step - warmup, steps - warmup) / (steps - warmup)
        cosine = peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < warmup, rising, cosine)

    def get_config(self):
        lr, steps, warmup = self.values
        return {"lr": lr, "steps": steps, "warmup_steps": warmup}
