"""Reading image files of any mode into uint8 RGB arrays, with Pillow, and telling which
files TensorFlow can decode in the input graph instead (plain JPEGs)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def read_rgb(path: str) -> np.ndarray:
    """Decodes any mode (L, P, RGBA, I;16, CMYK, ...) into an (H, W, 3) uint8 array.

    Transparent pixels are composited on black, 16-bit images are scaled to 8 bits.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            arr = np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=-1)
        if im.mode == "F":
            arr = np.clip(np.asarray(im), 0, 255).astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=-1)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (0, 0, 0, 255))
            im = Image.alpha_composite(background, im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def check_image(path: str) -> str | None:
    """None if `path` decodes completely, else the reason it does not."""
    try:
        arr = read_rgb(path)
        if arr.size == 0:
            return "empty image"
        return None
    except Exception as err:  # Pillow raises many types for damaged files
        return f"{type(err).__name__}: {err}"


def check_images(paths: list[str], workers: int = 8) -> list[str | None]:
    """`check_image` over many files, in threads (Pillow releases the GIL to decode)."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(check_image, paths, chunksize=16))


_EXIF_ORIENTATION = 0x0112


def inspect_image(path: str) -> tuple[str | None, bool]:
    """(None if `path` decodes completely, else the reason it does not; whether
    TensorFlow's JPEG decoder gives what `read_rgb` gives, so it can decode the file in the
    input graph).

    A JPEG in RGB or greyscale without an EXIF rotation qualifies; it is checked by
    decoding it at 1/8 scale (libjpeg's DCT scaling reads every compressed byte, so a
    damaged or truncated file still fails), several times cheaper than a full decode.
    Every other file (PNG, CMYK, rotated photos, 16-bit, ...) gets the full Pillow decode.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            plain = (im.format == "JPEG" and im.mode in ("RGB", "L")
                     and im.getexif().get(_EXIF_ORIENTATION, 1) == 1)
            if plain:
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
                return None, True
    except Exception as err:  # Pillow raises many types for damaged files
        return f"{type(err).__name__}: {err}", False
    return check_image(path), False


def inspect_images(paths: list[str], workers: int = 8) -> list[tuple[str | None, bool]]:
    """`inspect_image` over many files, in threads."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(inspect_image, paths, chunksize=16))
