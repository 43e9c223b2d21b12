"""tf.data pipelines: decode, convert to RGB, resize, cache, shuffle, batch, augment.

Plain JPEGs are decoded in the graph by TensorFlow (DCT-scaled to the model's size); other
image files by Pillow through `tf.numpy_function`.

Images are cached as uint8 and leave the pipeline as float32 RGB in [0, 255]; each backbone's own preprocessing is
a layer inside the model, so that a saved model takes plain pixels.
"""

from __future__ import annotations


import numpy as np

from kerastl.data.splits import Split

AUTOTUNE = -1


def _decode_path(path):
    import tensorflow as tf

    from kerastl.data.images import read_rgb

    image = tf.numpy_function(lambda p: read_rgb(p.decode()), [path], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    return image


def _decode_jpeg_in_graph(path, size: int):
    """A plain JPEG (see `images.inspect_image`) decoded by TensorFlow, at the largest DCT
    scale (1/8, 1/4, 1/2 or 1) that keeps both sides >= `size`: a 640x480 photo for a 224 px
    model decodes at 320x240, a quarter of the pixels, before the resize."""
    import tensorflow as tf

    contents = tf.io.read_file(path)
    shape = tf.io.extract_jpeg_shape(contents)
    short = tf.minimum(shape[0], shape[1])
    scale = sum(tf.cast(short >= k * size, tf.int32) for k in (2, 4, 8))  # 0..3: ratio 1, 2, 4, 8
    image = tf.switch_case(scale, [lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r)
                                   for r in (1, 2, 4, 8)])
    image.set_shape([None, None, 3])
    return image


def to_rgb(image):
    """uint8/float (H, W, C) with C in 1, 2, 3, 4 -> (H, W, 3)."""
    import tensorflow as tf

    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 2:  # grey + alpha
        return tf.image.grayscale_to_rgb(image[..., :1])
    if channels in (3,):
        return image
    if channels == 4:
        return image[..., :3]
    return tf.cond(
        tf.shape(image)[-1] < 3,
        lambda: tf.tile(image[..., :1], [1, 1, 3]),
        lambda: image[..., :3],
    )


def resize(image, size: int):
    """(..., H, W, C) -> (..., size, size, C) float32 in [0, 255], bilinear.

    Antialiased when a side shrinks by 2x or more; below that, plain bilinear already reads
    every input pixel, and the antialiasing filter would cost about as much as decoding the
    JPEG."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    shrink = tf.maximum(shape[-3], shape[-2]) >= 2 * size
    image = tf.cond(shrink, lambda: tf.image.resize(image, (size, size), method="bilinear", antialias=True),
                    lambda: tf.image.resize(image, (size, size), method="bilinear"))
    return tf.clip_by_value(image, 0.0, 255.0)


def _elements(split: Split):
    """One split's examples before decoding: (image, label) for arrays and tf.data sources,
    (path, label[, decode in graph]) for files."""
    import tensorflow as tf

    if split.images is not None:
        return tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    if split.paths is not None and split.in_graph is not None and split.in_graph.any():
        return tf.data.Dataset.from_tensor_slices((split.paths, split.labels, split.in_graph))
    if split.paths is not None:
        return tf.data.Dataset.from_tensor_slices((split.paths, split.labels))
    return split.dataset


def _decoded(elements, split: Split, size: int):
    """`_elements(split)` (in any order) as unbatched (uint8 image, int32 label) pairs,
    decoded and resized."""
    import tensorflow as tf

    ds = elements
    if split.images is None and split.paths is not None:
        if split.in_graph is not None and split.in_graph.any():
            ds = ds.map(lambda p, y, fast: (tf.cond(fast, lambda: _decode_jpeg_in_graph(p, size),
                                                    lambda: _decode_path(p)), y),
                        num_parallel_calls=AUTOTUNE)
        else:
            ds = ds.map(lambda p, y: (_decode_path(p), y), num_parallel_calls=AUTOTUNE)
    # uint8 after resizing: a cache of it takes a quarter of float32's memory.
    return ds.map(
        lambda x, y: (tf.cast(tf.round(resize(to_rgb(x), size)), tf.uint8), tf.cast(y, tf.int32)),
        num_parallel_calls=AUTOTUNE,
    )


def examples(split: Split, size: int):
    """Unbatched (uint8 image, int32 label) pairs of one split, decoded and resized."""
    return _decoded(_elements(split), split, size)


def resolve_cache(data_cfg, stage: str, name: str, size: int, split: Split, domain: str):
    """The `cache` argument of `build_dataset` for split `name` of a data section (`domain`
    names it in the log).

    `cache: true` keeps the decoded images in memory when they fit the section's
    `cache_memory_mb` (uint8, `size` x `size` x 3 each), else streams them (False: decoded
    again every epoch, memory flat in the split's size) and says so; `false` streams; a
    folder path names one cache file per stage, split and image size inside it (created)."""
    from pathlib import Path

    setting = data_cfg.cache
    if setting is True:
        need = len(split) * size * size * 3
        if need > data_cfg.cache_memory_mb * 2**20:
            import logging

            logging.getLogger("kerastl").info(
                "%s %s: %s images at %d px need %.1f GB decoded, more than cache_memory_mb (%d): "
                "decoded again every epoch instead of kept in memory", domain, name, f"{len(split):,}", size,
                need / 2**30, data_cfg.cache_memory_mb)
            return False
        return True
    if not isinstance(setting, str):
        return setting
    folder = Path(setting).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{stage}-{name}-{size}px")


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (k * n_c): each class carries the same total weight."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1))
    return weights.astype(np.float32)


def build_dataset(
    split: Split,
    size: int,
    batch_size: int,
    num_classes: int,
    *,
    training: bool = False,
    seed: int = 0,
    augmenter=None,
    cache: bool | str = True,
    epochs: int = 1,
    initial_epoch: int = 0,
    weights: np.ndarray | None = None,
    features: np.ndarray | None = None,
    replicas: int = 1,
):
    """Batched (image, one-hot label[, sample weight]) dataset of one split.

    Not for training, the batch is `eval_batch_size(len(split), batch_size, replicas)`:
    under a strategy of `replicas` replicas no replica then gets an empty last batch.

    With `features` (one row per image of `split`, in its order), the rows take the
    images' place: a frozen backbone's outputs computed once, batched exactly as the
    images would be.

    For training, the order of epoch `e` depends only on (`seed`, `e`), so a run resumed at
    epoch `e` sees the same batches as the uninterrupted run. The dataset then yields the
    batches of epochs `initial_epoch .. epochs-1` back to back; fit it with
    `steps_per_epoch=steps_per_epoch(split, batch_size)`.
    """
    import tensorflow as tf

    def as_float(ds):
        return ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE)

    # Streamed (no cache, training): each epoch shuffles the file names and decodes again,
    # so memory does not grow with the split; cached: one decode, then a shuffle buffer of
    # every decoded image.
    streamed = training and features is None and not cache
    if features is not None:
        ds = tf.data.Dataset.from_tensor_slices((features, split.labels.astype(np.int32)))
    elif streamed:
        ds = _elements(split)  # shuffled below before decoding: file names, not images
    else:
        ds = examples(split, size)
        if cache:
            ds = ds.cache(cache if isinstance(cache, str) else "")
    if not training:
        ds = as_float(ds)

    weight_table = tf.constant(weights) if weights is not None else None

    def label(x, y):
        onehot = tf.one_hot(y, num_classes)
        if weight_table is None:
            return x, onehot
        return x, onehot, tf.gather(weight_table, y)

    if not training:
        batch_size = eval_batch_size(len(split), batch_size, replicas)
        return ds.batch(batch_size).map(label, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    n = int(len(split))
    drop = bool(n >= batch_size)
    batches_per_epoch = n // batch_size if drop else -(-n // batch_size)

    def epoch(e: int):
        # The same order streamed or cached: one shuffle of n elements with this seed.
        shuffled = ds.shuffle(n, seed=seed * 100003 + e, reshuffle_each_iteration=False)
        if streamed:
            shuffled = _decoded(shuffled, split, size)
        return shuffled.batch(batch_size, drop_remainder=drop)

    # One dataset per epoch with its own Python-int seed, all of them reading the one cache
    # above, concatenated as a balanced tree. Not a flat_map over epoch numbers: a tensor seed
    # fails in shuffle when the global seed is 0 (tf.random.set_seed(0) makes TensorFlow's
    # get_seed compare a graph tensor as a Python bool). Not a chain: a chain of concatenated
    # datasets costs each element time in proportion to its length, and a few labelled images
    # over a long run are thousands of one-batch epochs (31 ms a batch at 3,000, 0.1 ms as a tree).
    def concatenated(first: int, end: int):
        if end - first <= 1:
            return epoch(first)
        middle = (first + end) // 2
        return concatenated(first, middle).concatenate(concatenated(middle, end))

    epochs_ds = concatenated(initial_epoch, epochs)
    epochs_ds = as_float(epochs_ds)  # per batch: the shuffle buffer holds uint8 images
    if augmenter is not None:
        # Each batch's augmentation seed is (seed, epoch, batch index in the epoch):
        # stateless, so the parallel map and a resumed run draw exactly what the
        # uninterrupted run draws. One map over the chained epochs, not one per epoch:
        # each map traces the augmenter (~0.1 s), which cost 8 s for 80 one-step epochs.
        def augment(g, b):
            e = initial_epoch + g // batches_per_epoch
            i = g % batches_per_epoch
            batch_seed = tf.stack([tf.constant(seed, tf.int64), e * 1_000_003 + i])
            if not augmenter.mixes_labels:
                return label(augmenter(b[0], batch_seed), b[1])
            # MixUp / CutMix mix the one-hot labels with the images; a class weight stays
            # that of the image's own class.
            x, onehot = augmenter(b[0], batch_seed, labels=tf.one_hot(b[1], num_classes))
            return (x, onehot) if weight_table is None else (x, onehot, tf.gather(weight_table, b[1]))

        return epochs_ds.enumerate().map(augment, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
    return epochs_ds.map(label, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def eval_batch_size(n: int, batch_size: int, replicas: int) -> int:
    """The batch size for evaluating `n` images on `replicas` replicas: `batch_size`, or
    the largest smaller multiple of `replicas` whose last batch has at least one image per
    replica. tf.distribute splits a last batch of r < replicas images into r replicas with
    one image and the rest with none, and a model with BatchNormalization after a
    convolution fails on an empty batch on CPU (n = 33 at batch 32 on 2 replicas did)."""
    def fits(b):
        return n % b == 0 or n % b >= replicas

    if replicas <= 1 or fits(batch_size):
        return batch_size
    smaller = [b for b in range(batch_size - replicas, 0, -replicas) if fits(b)]
    return smaller[0] if smaller else batch_size


def steps_per_epoch(split: Split, batch_size: int) -> int:
    n = len(split)
    return n // batch_size if n >= batch_size else 1


def paired_dataset(source_split: Split, target_split: Split, size: int, batch: int, num_classes: int, seed: int,
                   steps: int, epochs: int, initial_epoch: int, augmenters, caches=(True, True),
                   labelled_split: Split | None = None, labelled_cache=True):
    """((xs, ys), (xt, yt)) batches of batch/2 + batch/2 for domain adaptation, `epochs *
    steps` of them from `initial_epoch` on; the shorter domain is repeated.

    With `labelled_split` (a few labelled target images: semi-supervised adaptation) each
    batch has a third part (xl, yl) of batch/2 of them, as many as source images (as MME
    does), augmented as the target is; every part then splits evenly over the replicas."""
    import math

    import tensorflow as tf

    half = max(batch // 2, 1)
    total = steps * epochs
    streams = [(source_split, augmenters[0], caches[0], half), (target_split, augmenters[1], caches[1], half)]
    if labelled_split is not None:
        streams.append((labelled_split, augmenters[1], labelled_cache, half))
    parts = []
    for i, (split, augmenter, cache, size_of_batch) in enumerate(streams):
        needed = math.ceil(total / steps_per_epoch(split, size_of_batch))
        parts.append(build_dataset(split, size, size_of_batch, num_classes, training=True, cache=cache,
                                   seed=seed * 7 + i, augmenter=augmenter, epochs=needed))
    ds = tf.data.Dataset.zip(tuple(parts)).take(total)
    return ds.skip(initial_epoch * steps).prefetch(tf.data.AUTOTUNE)
