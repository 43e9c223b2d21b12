import numpy as np
import pytest
from PIL import Image

from kerastl.config import DataConfig
from kerastl.data.builtin import load_sklearn_digits, render_syndigits
from kerastl.data.domain import load_domain
from kerastl.data.images import read_rgb
from kerastl.data.pipeline import build_dataset
from kerastl.errors import DataError

from conftest import make_image_folder


def test_syndigits_is_deterministic_and_labelled():
    a, ya = render_syndigits(40, seed=3)
    b, yb = render_syndigits(40, seed=3)
    c, _ = render_syndigits(40, seed=4)
    assert a.shape == (40, 32, 32, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a, c)
    assert set(ya) <= set(range(10)) and a.max() > 100  # something was drawn


def test_builtin_splits_are_disjoint_and_few_label_subset_is_exact():
    d = load_domain(DataConfig(dataset="digits", labels_per_class=7), seed=0, origin="target")
    assert d.class_names == [str(i) for i in range(10)]
    assert np.bincount(d.splits["train"].labels).tolist() == [7] * 10
    total = sum(len(d.splits[s]) for s in ("train", "val", "test"))
    assert len(d.splits["test"]) > 300 and total < 1797
    # `pool`: every training image (adaptation's unlabelled stream), the labelled ones among them
    assert len(d.splits["pool"]) + len(d.splits["val"]) + len(d.splits["test"]) == 1797
    pool = {img.tobytes() for img in d.splits["pool"].images}
    assert all(img.tobytes() in pool for img in d.splits["train"].images)
    again = load_domain(DataConfig(dataset="digits", labels_per_class=7), seed=0, origin="target")
    np.testing.assert_array_equal(d.splits["train"].images, again.splits["train"].images)


def test_split_indices_are_disjoint_and_cover_every_example():
    from kerastl.data.splits import split_indices

    labels = np.repeat(np.arange(5), 37)
    idx = split_indices(labels, 0.1, 0.2, seed=3)
    together = np.concatenate(list(idx.values()))
    assert len(together) == len(labels) and len(np.unique(together)) == len(labels)
    assert 0.15 < len(idx["test"]) / len(labels) < 0.25


def test_folder_splits_are_disjoint_and_cover_every_file(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=15)
    d = load_domain(DataConfig(dataset=str(root), val_fraction=0.2, test_fraction=0.2), 0, "target")
    files = [set(s.paths) for s in d.splits.values()]
    assert sum(len(f) for f in files) == 30 and len(set().union(*files)) == 30
    assert set().union(*files) == {str(p) for p in root.rglob("*.png")}


def test_labels_per_class_more_than_available_is_a_clear_error():
    with pytest.raises(DataError, match="target.labels_per_class: 500 is more than class"):
        load_domain(DataConfig(dataset="digits", labels_per_class=500), seed=0, origin="target")


def _save(path, mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        Image.fromarray((rng.integers(0, 65535, (20, 30))).astype(np.uint16)).save(path)
        return
    rgb = Image.fromarray(rng.integers(0, 255, (20, 30, 3)).astype(np.uint8))
    if mode == "P":
        rgb.convert("P", palette=Image.ADAPTIVE).save(path)
    else:
        rgb.convert(mode).save(path)


@pytest.mark.parametrize(
    "mode, ext", [("L", "png"), ("P", "png"), ("RGBA", "png"), ("I;16", "png"), ("CMYK", "jpg"),
                  ("RGB", "jpg"), ("LA", "png"), ("RGB", "bmp"), ("RGB", "gif")]
)
def test_every_image_mode_becomes_rgb_uint8(tmp_path, mode, ext):
    path = tmp_path / f"img.{ext}"
    _save(path, mode)
    arr = read_rgb(str(path))
    assert arr.shape == (20, 30, 3) and arr.dtype == np.uint8
    assert arr.max() > 0


def test_pixel_values_of_each_mode(tmp_path):
    # RGBA: half-transparent red on black is half red; fully transparent is black.
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)
    rgba[0, 1] = (200, 0, 0, 128)
    rgba[1, 0] = (255, 255, 255, 0)
    rgba[1, 1] = (10, 20, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_rgb(str(tmp_path / "a.png")),
                                  [[[200, 0, 0], [100, 0, 0]], [[0, 0, 0], [10, 20, 30]]])
    # 16-bit greyscale scales 0..65535 to 0..255.
    Image.fromarray(np.array([[0, 65535], [32896, 1000]], np.uint16)).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_rgb(str(tmp_path / "g.png"))[..., 0], [[0, 255], [128, 3]])
    assert (read_rgb(str(tmp_path / "g.png")) == read_rgb(str(tmp_path / "g.png"))[..., :1]).all()
    # Palette: the palette's colours, not the indices.
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_rgb(str(tmp_path / "p.png")), [[[0, 0, 0], [12, 34, 56]]])
    # CMYK JPEG: pure cyan ink becomes (near) cyan RGB.
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    cyan = read_rgb(str(tmp_path / "c.jpg")).reshape(-1, 3).mean(0)
    assert cyan[0] < 10 and cyan[1] > 245 and cyan[2] > 245, cyan


def test_bad_files_are_skipped_counted_and_listed(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=8)
    (root / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    good = (root / "dog" / "dog_0.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    d = load_domain(DataConfig(dataset=str(root), val_fraction=0.25, test_fraction=0.25), 0, "target")
    skipped = sorted(p.rsplit("/", 1)[-1] for p, _ in d.skipped)
    assert skipped == ["broken.jpg", "truncated.png"]
    assert sum(len(s) for s in d.splits.values()) == 16
    ds = build_dataset(d.splits["train"], 16, 4, 2, training=True, epochs=2)
    batches = list(ds)
    assert len(batches) > 0 and batches[0][0].shape[1:] == (16, 16, 3)


def test_plain_jpegs_decode_in_the_graph_like_pillow_and_the_rest_stay_with_pillow(tmp_path):
    """A plain JPEG is checked at 1/8 scale and decoded by TensorFlow (DCT-scaled), giving
    what Pillow's full decode gives after the resize; a rotated photo (EXIF), a PNG and a
    CMYK JPEG stay with Pillow; a truncated JPEG is still caught by the check."""
    from sklearn.datasets import load_sample_image

    from kerastl.data.images import inspect_image
    from kerastl.data.pipeline import examples
    from kerastl.data.splits import Split

    photo = Image.fromarray(load_sample_image("flower.jpg"))  # 427x640: a real photo
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    photo.save(tmp_path / "a" / "plain.jpg", quality=90)
    photo.convert("L").save(tmp_path / "a" / "grey.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    photo.save(tmp_path / "b" / "rotated.jpg", quality=90, exif=exif)
    photo.save(tmp_path / "b" / "photo.png")
    photo.convert("CMYK").save(tmp_path / "b" / "cmyk.jpg", quality=90)
    data = (tmp_path / "a" / "plain.jpg").read_bytes()
    (tmp_path / "b" / "truncated.jpg").write_bytes(data[: len(data) // 2])

    checked = {p.name: inspect_image(str(p)) for p in sorted(tmp_path.glob("*/*"))}
    assert {k: v[1] for k, v in checked.items()} == {
        "plain.jpg": True, "grey.jpg": True, "rotated.jpg": False, "photo.png": False, "cmyk.jpg": False,
        "truncated.jpg": False}
    assert checked["truncated.jpg"][0] and all(v[0] is None for k, v in checked.items() if k != "truncated.jpg")

    d = load_domain(DataConfig(dataset=str(tmp_path), val_fraction=0.0, test_fraction=0.0), 0, "target")
    train = d.splits["train"]
    assert dict(zip((p.rsplit("/", 1)[-1] for p in train.paths), train.in_graph.tolist())) == {
        "plain.jpg": True, "grey.jpg": True, "rotated.jpg": False, "photo.png": False, "cmyk.jpg": False}
    for size in (32, 224):  # DCT scale 1/8 and 1/2
        fast = np.stack([x for x, _ in examples(train, size)]).astype(float)
        slow = np.stack([x for x, _ in examples(Split(train.labels, paths=train.paths), size)]).astype(float)
        diff = np.abs(fast - slow).mean(axis=(1, 2, 3))
        assert diff.max() < 4.0, diff  # of 255 levels (measured ~2 at 32 px): DCT scaling, not another image
    rotated = [x for (x, _), p in zip(examples(train, 32), train.paths) if p.endswith("rotated.jpg")][0]
    plain = [x for (x, _), p in zip(examples(train, 32), train.paths) if p.endswith("plain.jpg")][0]
    assert np.abs(rotated.numpy().astype(float) - plain.numpy()).mean() > 10  # turned, as displayed


def test_split_folders_on_disk_and_val_carved_from_train(tmp_path):
    make_image_folder(tmp_path / "d" / "train", per_class=10)
    make_image_folder(tmp_path / "d" / "test", per_class=3, seed=1)
    d = load_domain(DataConfig(dataset=str(tmp_path / "d"), val_fraction=0.2), 0, "target")
    assert len(d.splits["test"]) == 6 and len(d.splits["val"]) == 4 and len(d.splits["train"]) == 16


def test_empty_class_folder_is_an_error(tmp_path):
    root = make_image_folder(tmp_path / "d")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="class folder .*empty has no images"):
        load_domain(DataConfig(dataset=str(root)), 0, "source")


def test_single_class_is_an_error(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("only",))
    with pytest.raises(DataError, match="at least 2 classes"):
        load_domain(DataConfig(dataset=str(root)), 0, "target")


def test_split_folders_with_different_classes_is_an_error(tmp_path):
    make_image_folder(tmp_path / "d" / "train", classes=("a", "b"))
    make_image_folder(tmp_path / "d" / "test", classes=("a", "c"))
    with pytest.raises(DataError, match="missing: \\['b'\\], extra: \\['c'\\]"):
        load_domain(DataConfig(dataset=str(tmp_path / "d")), 0, "target")


def test_training_order_depends_only_on_seed_and_epoch():
    images, labels = load_sklearn_digits()
    from kerastl.data.splits import Split

    split = Split(labels=labels[:64], images=images[:64])
    full = [y.numpy().argmax(1).tolist() for _, y in build_dataset(split, 8, 16, 10, training=True, seed=5, epochs=3)]
    resumed = [y.numpy().argmax(1).tolist() for _, y in build_dataset(split, 8, 16, 10, training=True, seed=5, epochs=3, initial_epoch=2)]
    assert len(full) == 12 and resumed == full[8:]
    assert full[:4] != full[4:8]  # epochs are shuffled differently


def test_many_epochs_of_a_few_images_come_in_epoch_order():
    # A few labelled images over a long run are one batch an epoch for thousands of epochs;
    # the epochs are joined as a tree, which must keep them in order from any first epoch.
    images, labels = load_sklearn_digits()
    from kerastl.data.splits import Split

    split = Split(labels=labels[:5], images=images[:5])

    def batches(first, end):
        return [x.numpy() for x, _ in build_dataset(split, 8, 16, 10, training=True, seed=3, epochs=end,
                                                    initial_epoch=first)]

    full = batches(2, 13)
    assert len(full) == 11 and all(b.shape[0] == 5 for b in full)
    np.testing.assert_array_equal(np.stack(full[5:]), np.stack(batches(7, 13)))
    for e in (2, 12):
        np.testing.assert_array_equal(full[e - 2], batches(e, e + 1)[0])
    assert len({b.sum(axis=(1, 2, 3)).tobytes() for b in full}) > 1  # the epochs are shuffled differently


def test_a_split_over_the_memory_budget_streams_in_the_cached_order(tmp_path, caplog):
    from types import SimpleNamespace

    from PIL import Image

    from kerastl.data.pipeline import resolve_cache
    from kerastl.data.splits import Split

    images, labels = load_sklearn_digits()
    paths = []
    for i in range(40):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(images[i, :, :, 0]).save(paths[-1])
    for split in (Split(labels=labels[:40], images=images[:40]), Split(labels=labels[:40], paths=paths)):
        def batches(cache):
            return [(x.numpy(), y.numpy()) for x, y in
                    build_dataset(split, 16, 16, 10, training=True, seed=2, cache=cache, epochs=2)]

        cached, streamed = batches(True), batches(False)
        assert len(cached) == len(streamed) == 4
        for (xc, yc), (xs, ys) in zip(cached, streamed):
            np.testing.assert_array_equal(xs, xc)  # same images, same order, epoch after epoch
            np.testing.assert_array_equal(ys, yc)
        assert not np.array_equal(cached[0][1], cached[2][1])  # and the epochs differ

    data = SimpleNamespace(cache=True, cache_memory_mb=1)  # 40 images at 16 px: 30 KB
    assert resolve_cache(data, "finetune", "train", 16, Split(labels=labels[:40], images=images[:40]), "digits") is True
    with caplog.at_level("INFO", logger="kerastl"):
        big = Split(labels=labels, images=images)  # 1,797 images at 224 px: 270 MB
        assert resolve_cache(data, "finetune", "train", 224, big, "digits") is False
    assert "digits train: 1,797 images at 224 px need 0.3 GB decoded, more than cache_memory_mb (1)" in caplog.text


def test_augmentation_applies_to_training_only_and_repeats_with_the_seed():
    from kerastl.data.augment import build_augmenter
    from kerastl.data.splits import Split

    images, labels = load_sklearn_digits()
    split = Split(labels=labels[:32], images=images[:32])
    aug = build_augmenter({"translate": 0.3, "rotate": 0.2}, "target")

    def first_batch(**kw):
        return next(iter(build_dataset(split, 16, 32, 10, cache=False, **kw)))[0].numpy()

    plain = first_batch()
    # An augmenter handed to an evaluation dataset is not applied.
    np.testing.assert_array_equal(first_batch(augmenter=aug), plain)
    unaugmented = first_batch(training=True, seed=3)
    trained = first_batch(training=True, seed=3, augmenter=aug)
    assert trained.shape == plain.shape
    assert np.abs(trained - unaugmented).mean() > 5.0  # the same images, moved
    # The same seed draws the same transformations, in any run and any thread order.
    np.testing.assert_array_equal(first_batch(training=True, seed=3, augmenter=aug), trained)
    other = first_batch(training=True, seed=4, augmenter=build_augmenter({"translate": 0.3, "rotate": 0.2}, "target"))
    assert not np.array_equal(np.sort(other.reshape(32, -1).sum(1)), np.sort(trained.reshape(32, -1).sum(1)))


def test_a_resumed_epoch_is_augmented_like_the_uninterrupted_one():
    from kerastl.data.augment import build_augmenter
    from kerastl.data.splits import Split

    images, labels = load_sklearn_digits()
    split = Split(labels=labels[:48], images=images[:48])
    aug = build_augmenter({"zoom": 0.2, "flip": "horizontal"}, "source")
    full = [x.numpy() for x, _ in build_dataset(split, 16, 16, 10, training=True, seed=1, augmenter=aug, epochs=3)]
    resumed = [x.numpy() for x, _ in build_dataset(split, 16, 16, 10, training=True, seed=1, augmenter=aug, epochs=3,
                                                   initial_epoch=2)]
    assert len(full) == 9 and len(resumed) == 3
    for a, b in zip(full[6:], resumed):
        np.testing.assert_array_equal(a, b)


def test_rotate_zoom_translate_resample_once_as_the_layers_in_turn_would():
    import tensorflow as tf

    from kerastl.data.augment import _seed_stream, build_augmenter

    yy, xx = np.mgrid[0:64, 0:64].astype("float32")  # a smooth image: interpolation error stays small
    image = np.stack([128 + 100 * np.sin(xx / 9), 128 + 100 * np.cos(yy / 7), 2 * (xx + yy)], -1)
    images = tf.constant(np.repeat(image[None], 4, axis=0))
    aug = build_augmenter({"rotate": 0.03, "zoom": 0.1, "translate": 0.08, "contrast": 0.1}, "source")
    seed = tf.constant([3, 4], tf.int64)
    fused = aug(images, seed).numpy()
    in_turn = images  # each layer resampling on its own, with the same draws
    for i, layer in enumerate(aug.layers):
        draws = _seed_stream(tf.random.experimental.stateless_fold_in(seed, i))
        in_turn = layer.transform_images(in_turn, layer.get_random_transformation(in_turn, training=True, seed=draws),
                                         training=True)
    inner = np.s_[:, 16:48, 16:48]  # (the borders differ: three reflections against one)
    assert np.abs(fused - in_turn.numpy())[inner].mean() < 0.5
    assert np.abs(fused - images.numpy())[inner].mean() > 5.0  # and they moved
    np.testing.assert_array_equal(aug(images, seed).numpy(), fused)


def test_resize_antialiases_large_shrinks_only():
    import tensorflow as tf

    from kerastl.data.pipeline import resize

    checker = (np.indices((64, 64)).sum(0) % 2 * 255.0).astype("float32")[..., None]
    assert resize(checker, 20).numpy().std() < 1.0  # 3.2x smaller: grey, not aliased stripes
    assert tf.image.resize(checker, (20, 20)).numpy().std() > 20.0  # (what plain bilinear makes of it)
    photo = np.random.default_rng(0).uniform(0, 255, (2, 300, 320, 3)).astype("float32")  # a batch, 1.4x
    np.testing.assert_allclose(resize(photo, 224).numpy(), tf.image.resize(photo, (224, 224)).numpy(), atol=1e-3)


def test_bad_augment_value_is_a_config_error():
    from kerastl.data.augment import build_augmenter
    from kerastl.errors import ConfigError

    with pytest.raises(ConfigError, match="target.augment.rotate: 'lots' is not accepted"):
        build_augmenter({"rotate": "lots"}, "target")


def test_unknown_augmentation_is_a_config_error():
    from kerastl.data.augment import build_augmenter
    from kerastl.errors import ConfigError

    with pytest.raises(ConfigError, match="target.augment.flop: unknown augmentation 'flop'. Did you mean flip"):
        build_augmenter({"flop": "horizontal"}, "target")


def test_tfds_image_folder(tmp_path):
    make_image_folder(tmp_path / "tf" / "train", per_class=5)
    make_image_folder(tmp_path / "tf" / "test", per_class=2, seed=2)
    d = load_domain(DataConfig(dataset="tfds:image_folder", data_dir=str(tmp_path / "tf"), val_fraction=0.0), 0, "target")
    assert sorted(d.class_names) == ["cat", "dog"]
    assert len(d.splits["train"]) == 10 and len(d.splits["test"]) == 4
    x, y = next(iter(build_dataset(d.splits["train"], 16, 10, 2)))
    assert x.shape == (10, 16, 16, 3)


def test_tfds_unknown_dataset_is_a_clear_error():
    with pytest.raises(DataError, match="tfds:no_such_dataset_xyz"):
        load_domain(DataConfig(dataset="tfds:no_such_dataset_xyz"), 0, "target")


def test_the_shifted_digit_domains_keep_the_labels_and_change_the_images():
    from kerastl.data.shifted import blend_into_texture, degrade

    digits, labels = load_sklearn_digits()
    m = load_domain(DataConfig(dataset="digits-m", val_fraction=0.0, test_fraction=0.0), seed=0, origin="target")
    assert m.class_names == [str(i) for i in range(10)] and m.splits["train"].images.shape == (1797, 32, 32, 3)
    np.testing.assert_array_equal(m.splits["train"].labels, labels)  # the same digits, in order
    colour = m.splits["train"].images.astype(float)
    assert np.abs(colour[..., 0] - colour[..., 1]).mean() > 5  # colour, not grey
    first = blend_into_texture(digits[:20])
    np.testing.assert_array_equal(first, blend_into_texture(digits[:20]))  # the same every time
    assert not np.array_equal(first, blend_into_texture(digits[:20], seed=1))

    strokes = render_syndigits(20, seed=3)[0]
    low = degrade(strokes)
    assert low.shape == (20, 32, 32, 3) and np.array_equal(low[..., 0], low[..., 2])  # grey
    assert low.std(axis=(1, 2, 3)).mean() < strokes.std(axis=(1, 2, 3)).mean() / 2  # contrast compressed
    assert np.array_equal(low, degrade(strokes))
