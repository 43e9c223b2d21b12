"""Digit domains with other kinds of shift than fonts -> handwriting, made offline from the
two built-in ones, so that adaptation can be judged on more than one kind of shift.

* `digits-m`: scikit-learn's handwritten digits (upscaled to 32x32) blended into colour
  texture, as MNIST-M does with MNIST: each image is |patch - digit| over a random crop of
  the two photos scikit-learn ships (a Chinese temple, a flower). Shift: colour and texture.
* `syndigits-lowres`: rendered digits degraded as a poor camera would: resolution cut to
  14x14 and back, contrast compressed to a narrow grey range, sensor noise. Shift:
  resolution, contrast and noise (no colour, no texture).

Both are RGB uint8 arrays of shape (N, 32, 32, 3), labels 0-9, the same for every run (their
randomness has fixed seeds; a run's seed only splits them).
"""

from __future__ import annotations

import numpy as np

from kerastl.data.builtin import CLASS_NAMES, SYNDIGITS_SIZE, load_sklearn_digits, load_syndigits
from kerastl.data.splits import SourceData, Split, source, split_indices

SIZE = SYNDIGITS_SIZE
_TEXTURE_SEED = 20
_DEGRADE_SEED = 21


def _upscale(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w, 1) uint8 -> (N, size, size) float32 in [0, 1], bilinear."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im[..., 0]).resize((size, size), Image.BILINEAR), np.float32)
                     for im in images]) / 255.0


def blend_into_texture(images: np.ndarray, seed: int = _TEXTURE_SEED) -> np.ndarray:
    """MNIST-M's recipe: |texture patch - 255 x digit| per channel, patches cropped at random
    from scikit-learn's sample photos."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(p, np.float32) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    digits = _upscale(images, SIZE)[..., None] * 255.0
    out = np.empty((len(images), SIZE, SIZE, 3), np.uint8)
    for i, digit in enumerate(digits):
        photo = photos[rng.integers(len(photos))]
        y, x = rng.integers(0, photo.shape[0] - SIZE), rng.integers(0, photo.shape[1] - SIZE)
        out[i] = np.abs(photo[y:y + SIZE, x:x + SIZE] - digit).astype(np.uint8)
    return out


def degrade(images: np.ndarray, seed: int = _DEGRADE_SEED, low: int = 14) -> np.ndarray:
    """Resolution cut to `low` x `low` and back up, contrast compressed into a random narrow
    grey range, Gaussian noise; grey copied to three channels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((len(images), SIZE, SIZE, 3), np.uint8)
    for i, im in enumerate(images):
        small = Image.fromarray(im[..., 0]).resize((low, low), Image.BILINEAR)
        x = np.asarray(small.resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255.0
        floor = rng.uniform(60.0, 120.0)
        x = floor + x * rng.uniform(50.0, 100.0) + rng.normal(0.0, 8.0, x.shape)
        out[i] = np.clip(np.round(x), 0, 255).astype(np.uint8)[..., None]
    return out


@source("digits-m")
@source("syndigits-lowres")
def shifted_splits(name: str, cfg, seed: int, origin: str = "") -> SourceData:
    if name == "digits-m":
        base, labels = load_sklearn_digits()
        images = blend_into_texture(base)
    else:
        base, labels = load_syndigits(cfg.num_examples, 0)  # the images do not depend on the run's seed
        images = degrade(base)
    idx = split_indices(labels, cfg.val_fraction, cfg.test_fraction, seed)
    return SourceData(list(CLASS_NAMES), {k: Split(labels=labels[v], images=images[v]) for k, v in idx.items() if len(v)})
