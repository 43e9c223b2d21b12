"""Two built-in digit domains that work offline, for demos and tests.

* `syndigits`: digits rendered from fonts (Pillow's bundled font and the TrueType fonts
  found on the system) with random size, position, rotation, stroke width and blur; made
  deterministically from a seed and cached on disk.
* `digits`: scikit-learn's 1,797 real handwritten 8x8 digits (UCI), bundled with it.

Both are white strokes on black, as uint8 arrays of shape (N, H, W, 1), labels 0-9.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path

import numpy as np

from kerastl.data.splits import SourceData, Split, source, split_indices

CLASS_NAMES = [str(d) for d in range(10)]
SYNDIGITS_SIZE = 32
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "/Library/Fonts",
              "C:/Windows/Fonts")


def cache_dir() -> Path:
    root = os.environ.get("KERASTL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "kerastl"
    )
    return Path(root)


def system_fonts() -> list[str]:
    """Latin TrueType fonts found on this machine, sorted so that the order is stable."""
    found = []
    for root in _FONT_DIRS:
        root = os.path.expanduser(root)
        for ext in ("ttf", "otf", "TTF"):
            found += glob.glob(os.path.join(root, "**", f"*.{ext}"), recursive=True)
    return sorted(set(found))


def _load_font(path: str | None, size: int):
    from PIL import ImageFont

    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size=size)


def render_syndigits(num: int, seed: int, size: int = SYNDIGITS_SIZE):
    """Renders `num` digit images; the same (num, seed, fonts) give the same arrays."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    fonts: list[str | None] = [None] + system_fonts()
    big = size * 2  # draw at twice the size, then downsample: smoother strokes
    images = np.zeros((num, size, size, 1), np.uint8)
    labels = rng.integers(0, 10, num).astype(np.int32)
    font_cache: dict = {}
    for i in range(num):
        font_path = fonts[rng.integers(len(fonts))]
        font_size = int(rng.integers(int(big * 0.45), int(big * 0.95)))
        key = (font_path, font_size)
        if key not in font_cache:
            font_cache[key] = _load_font(font_path, font_size)
        font = font_cache[key]
        canvas = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(canvas)
        text = CLASS_NAMES[labels[i]]
        stroke = int(rng.integers(0, 3))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
        w, h = right - left, bottom - top
        # Random position that keeps the glyph (mostly) inside the canvas.
        x = (big - w) / 2 + rng.uniform(-0.15, 0.15) * big - left
        y = (big - h) / 2 + rng.uniform(-0.15, 0.15) * big - top
        fill = int(rng.integers(160, 256))
        draw.text((x, y), text, fill=fill, font=font, stroke_width=stroke, stroke_fill=fill)
        canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR)
        blur = float(rng.uniform(0, 1.5))
        if blur > 0.2:
            canvas = canvas.filter(ImageFilter.GaussianBlur(blur))
        canvas = canvas.resize((size, size), Image.BILINEAR)
        images[i, :, :, 0] = np.asarray(canvas)
    return images, labels


def load_syndigits(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rendered digits, cached under `$KERASTL_CACHE` (default ~/.cache/kerastl)."""
    fonts = system_fonts()
    key = hashlib.sha1(
        repr((num, seed, SYNDIGITS_SIZE, fonts, 1)).encode()
    ).hexdigest()[:12]
    path = cache_dir() / f"syndigits-{num}-{seed}-{key}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return f["images"], f["labels"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is re-rendered below
    images, labels = render_syndigits(num, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, images=images, labels=labels)
    os.replace(tmp, path)
    return images, labels


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images / 16.0 * 255.0).astype(np.uint8)[..., None]
    return images, bunch.target.astype(np.int32)


@source("syndigits")
@source("digits")
def builtin_splits(name: str, cfg, seed: int, origin: str = "") -> SourceData:
    if name == "syndigits":
        images, labels = load_syndigits(cfg.num_examples, seed)
    else:
        images, labels = load_sklearn_digits()
    idx = split_indices(labels, cfg.val_fraction, cfg.test_fraction, seed)
    splits = {
        k: Split(labels=labels[v], images=images[v]) for k, v in idx.items() if len(v)
    }
    return SourceData(list(CLASS_NAMES), splits)
