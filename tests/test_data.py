"""Specification of `robustlab.data.load`.

The digits tests use scikit-learn's embedded data. The tfds tests write tiny
datasets (60 train and 30 test images) in tfds's prepared on-disk format into
a temporary `data_dir` with tfds's own `SequentialWriter`, using the real
registered builders' feature specs, so `load` reads them through the same
`tfds.builder(...).as_dataset(...)` path it uses for the real data. No test
touches the network.
"""

import dataclasses
import logging
import math
import os
import re
import socket
import threading

import numpy as np
import pytest
from sklearn.datasets import load_digits

from robustlab import data

N_DIGITS = 1797


def digits(**kwargs):
    return data.load("digits", **kwargs)


def rows_with_labels(x, y):
    """Each example as an integer row (pixels * 16, label), sorted, for
    comparing collections of digits examples as multisets."""
    rows = np.column_stack([np.rint(x.reshape(len(x), -1) * 16), y]).astype(np.int64)
    return rows[np.lexsort(rows.T[::-1])]


# ---------------------------------------------------------------------------
# digits: arrays


def test_digits_images_are_float32_nhwc_in_unit_range():
    ds = digits()
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.float32
        assert x.shape[1:] == (8, 8, 1)
        assert x.min() == 0.0 and x.max() == 1.0
    assert ds.input_shape == (8, 8, 1)
    assert ds.value_range == (0.0, 1.0)


def test_digits_pixels_are_the_0_to_16_counts_divided_by_16():
    x = digits().x_train
    np.testing.assert_array_equal(x * 16, np.rint(x * 16))


def test_digits_labels_are_int32_class_indices():
    ds = digits(validation_size=100)
    for y in (ds.y_train, ds.y_val, ds.y_test, ds.y_train_clean):
        assert y.dtype == np.int32 and y.ndim == 1
        assert set(np.unique(y)) <= set(range(10))
    assert ds.num_classes == 10
    assert ds.class_names == tuple(str(c) for c in range(10))


def test_digits_default_is_1000_train_and_the_other_797_test():
    ds = digits()
    assert len(ds.x_train) == data.DIGITS_DEFAULT_TRAIN_SIZE == 1000
    assert len(ds.y_train) == 1000
    assert len(ds.x_val) == len(ds.y_val) == 0
    assert len(ds.x_test) == len(ds.y_test) == 797


# ---------------------------------------------------------------------------
# digits: splits


def test_digits_train_split_has_exactly_100_per_class():
    ds = digits(train_size=1000, seed=3)
    assert np.bincount(ds.y_train_clean, minlength=10).tolist() == [100] * 10


def test_digits_validation_split_is_stratified_too():
    ds = digits(train_size=500, validation_size=200, seed=1)
    assert np.bincount(ds.y_val, minlength=10).tolist() == [20] * 10


def test_digits_uneven_train_size_gives_class_counts_differing_by_at_most_one():
    counts = np.bincount(digits(train_size=55).y_train_clean, minlength=10)
    assert counts.sum() == 55
    assert set(counts.tolist()) == {5, 6}


def test_digits_test_size_takes_a_stratified_subset_of_the_rest():
    ds = digits(train_size=1000, test_size=100)
    assert np.bincount(ds.y_test, minlength=10).tolist() == [10] * 10


def test_digits_splits_partition_all_1797_examples():
    ds = digits(train_size=1000, validation_size=300, seed=5)
    everything = load_digits()
    loaded = rows_with_labels(
        np.concatenate([ds.x_train, ds.x_val, ds.x_test]),
        np.concatenate([ds.y_train_clean, ds.y_val, ds.y_test]),
    )
    original = rows_with_labels(everything.images / 16.0, everything.target)
    assert len(loaded) == N_DIGITS
    np.testing.assert_array_equal(loaded, original)


def test_digits_same_seed_gives_identical_arrays():
    a, b = (
        digits(seed=7, validation_size=50, label_noise=0.2),
        digits(seed=7, validation_size=50, label_noise=0.2),
    )
    for field in (
        "x_train",
        "y_train",
        "y_train_clean",
        "x_val",
        "y_val",
        "x_test",
        "y_test",
    ):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_digits_different_seeds_give_different_training_sets():
    a, b = digits(seed=0), digits(seed=1)
    assert not np.array_equal(
        rows_with_labels(a.x_train, a.y_train_clean),
        rows_with_labels(b.x_train, b.y_train_clean),
    )


def test_digits_training_set_does_not_depend_on_validation_size_or_noise():
    plain = digits(seed=2)
    other = digits(seed=2, validation_size=300, label_noise=0.3)
    np.testing.assert_array_equal(plain.x_train, other.x_train)
    np.testing.assert_array_equal(plain.y_train, other.y_train_clean)


# ---------------------------------------------------------------------------
# Label noise


def test_design_4a_setting_flips_exactly_200_of_1000_training_labels():
    ds = digits(train_size=1000, seed=0, label_noise=0.2)
    assert len(ds.y_train) == 1000 and len(ds.y_test) == 797
    assert int(np.sum(ds.y_train != ds.y_train_clean)) == 200


def test_noisy_count_is_label_noise_times_n_rounded():
    ds = digits(train_size=30, label_noise=0.1)  # round(3.0)
    assert int(ds.noisy_mask.sum()) == 3
    ds = digits(train_size=1000, label_noise=0.0375)  # round(37.5) = 38
    assert int(ds.noisy_mask.sum()) == round(0.0375 * 1000) == 38


def test_every_noisy_label_is_a_different_class():
    ds = digits(label_noise=0.5, seed=4)
    noisy = ds.noisy_mask
    assert np.all(ds.y_train[noisy] != ds.y_train_clean[noisy])
    np.testing.assert_array_equal(ds.y_train[~noisy], ds.y_train_clean[~noisy])


def test_noisy_mask_marks_exactly_the_changed_labels():
    ds = digits(label_noise=0.2)
    assert ds.noisy_mask.dtype == bool and ds.noisy_mask.shape == ds.y_train.shape
    np.testing.assert_array_equal(ds.noisy_mask, ds.y_train != ds.y_train_clean)


def test_noisy_labels_are_spread_over_all_other_classes():
    # 750 flips: each of the 9 shifts (new - old) mod 10 is expected 83 times.
    ds = digits(train_size=1500, label_noise=0.5, seed=0)
    shift = (ds.y_train - ds.y_train_clean)[ds.noisy_mask] % 10
    counts = np.bincount(shift, minlength=10)
    assert counts[0] == 0
    assert counts[1:].min() > 50 and counts[1:].max() < 120


def test_y_train_clean_is_the_noise_free_training_labels():
    noisy, clean = digits(seed=9, label_noise=0.3), digits(seed=9)
    np.testing.assert_array_equal(noisy.y_train_clean, clean.y_train)


def test_label_noise_leaves_validation_and_test_labels_clean():
    noisy = digits(seed=9, validation_size=100, label_noise=0.3)
    clean = digits(seed=9, validation_size=100)
    np.testing.assert_array_equal(noisy.y_val, clean.y_val)
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)


def test_without_label_noise_labels_are_untouched():
    ds = digits(label_noise=0.0)
    np.testing.assert_array_equal(ds.y_train, ds.y_train_clean)
    assert not ds.noisy_mask.any()


def test_noisy_labels_depend_on_the_seed():
    a, b = digits(seed=0, label_noise=0.2), digits(seed=1, label_noise=0.2)
    assert not np.array_equal(a.noisy_mask, b.noisy_mask)


# ---------------------------------------------------------------------------
# The Dataset object


def test_dataset_repr_is_one_short_line_without_arrays():
    text = repr(digits(label_noise=0.2))
    assert "\n" not in text and len(text) < 200
    assert "train=1000" in text and "test=797" in text and "noisy_labels=200" in text


def test_dataset_summary_reports_split_sizes_and_noise():
    text = digits(label_noise=0.2).summary()
    assert "train 1000 (200 noisy labels, 20.0%)" in text
    assert "test  797" in text


def test_dataset_is_frozen():
    ds = digits()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.x_train = None


# ---------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
    "kwargs, error, argument",
    [
        (dict(train_size=0), ValueError, "train_size"),
        (dict(train_size=-5), ValueError, "train_size"),
        (dict(train_size=10.0), TypeError, "train_size"),
        (dict(train_size=True), TypeError, "train_size"),
        (dict(validation_size=-1), ValueError, "validation_size"),
        (dict(validation_size=None), TypeError, "validation_size"),
        (dict(test_size=0), ValueError, "test_size"),
        (dict(test_size="all"), TypeError, "test_size"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(seed=None), TypeError, "seed"),
        (dict(label_noise=1.0), ValueError, "label_noise"),
        (dict(label_noise=-0.1), ValueError, "label_noise"),
        (dict(label_noise=math.nan), ValueError, "label_noise"),
        (dict(label_noise="0.2"), TypeError, "label_noise"),
        (dict(download="yes"), TypeError, "download"),
    ],
)
def test_bad_argument_raises_naming_it(kwargs, error, argument):
    with pytest.raises(error, match=f"`{argument}`.*Received: {argument}="):
        digits(**kwargs)


def test_unknown_name_lists_the_available_datasets():
    with pytest.raises(ValueError) as info:
        data.load("foo")
    message = str(info.value)
    assert message.endswith("Received: name='foo'")
    for name in data.AVAILABLE_DATASETS:
        assert repr(name) in message


def test_train_size_larger_than_digits_says_how_many_exist():
    with pytest.raises(ValueError, match="1797 examples.*Received: train_size=1797"):
        digits(train_size=1797)


def test_splits_that_together_overflow_digits_are_rejected():
    with pytest.raises(ValueError, match="validation_size=797"):
        digits(train_size=1000, validation_size=797)
    with pytest.raises(ValueError, match="test_size=900"):
        digits(train_size=1000, test_size=900)


# ---------------------------------------------------------------------------
# Splitting helpers


def test_balanced_counts_share_equally_and_hand_on_shortfalls():
    rng = np.random.default_rng(0)
    assert data.balanced_class_counts([50, 50, 50], 30, rng).tolist() == [10, 10, 10]
    assert data.balanced_class_counts([2, 50, 50], 30, rng).tolist() == [2, 14, 14]
    assert data.balanced_class_counts([3, 3, 3], 9, rng).tolist() == [3, 3, 3]


# ---------------------------------------------------------------------------
# tensorflow-datasets: tiny prepared datasets on disk

TFDS_TRAIN_PER_CLASS, TFDS_TEST_PER_CLASS = 6, 3
TFDS_NAMES = {  # robustlab name -> tfds builder name
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "cifar10": "cifar10",
    "svhn": "svhn_cropped",
}
TFDS_SHAPES = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "svhn": (32, 32, 3),
}


def fake_image(shape, label, example_id):
    """Pixel (0, 0, 0) holds the example's id (modulo 256: unique in the
    default 60 + 30 images), all others 20 * label + 5."""
    image = np.full(shape, 20 * label + 5, dtype=np.uint8)
    image[0, 0, 0] = example_id % 256
    return image


def fake_examples(features, per_class, first_id):
    examples = []
    for i in range(10 * per_class):
        label = i % 10
        example = {}
        for key, feature in features.items():
            if key == "image":
                example[key] = fake_image(feature.shape, label, first_id + i)
            elif key == "label":
                example[key] = label
            else:  # svhn_cropped's "id" text
                example[key] = f"example_{first_id + i}"
        examples.append(example)
    return examples


def write_prepared_tfds_dataset(tfds_name, data_dir, train_per_class=TFDS_TRAIN_PER_CLASS):
    """Prepare `tfds_name` in `data_dir` with 10 * `train_per_class` train
    (60 by default) and 30 test images."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(tfds_name, data_dir=data_dir)
    os.makedirs(builder.data_dir, exist_ok=True)
    writer = tfds.core.SequentialWriter(builder.info, max_examples_per_shard=1000)
    writer.initialize_splits(["train", "test"])
    features = builder.info.features
    writer.add_examples(
        {
            "train": fake_examples(features, train_per_class, first_id=0),
            "test": fake_examples(features, TFDS_TEST_PER_CLASS, first_id=100),
        }
    )
    writer.close_all()


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    pytest.importorskip("tensorflow_datasets")
    root = str(tmp_path_factory.mktemp("tfds"))
    for name in TFDS_SHAPES:
        write_prepared_tfds_dataset(TFDS_NAMES[name], root)
    return root


@pytest.fixture
def offline(monkeypatch):
    """Fail the test if `load` probes the network or starts a download."""
    import tensorflow_datasets as tfds

    def no_probe(*args, **kwargs):
        raise AssertionError("load() probed the network")

    def no_download(*args, **kwargs):
        raise AssertionError("load() tried to download")

    monkeypatch.setattr(data, "can_reach_download_host", no_probe)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    monkeypatch.setattr(socket, "create_connection", no_probe)


def ids(x):
    return np.rint(x[:, 0, 0, 0] * 255).astype(int)


@pytest.mark.parametrize("name", sorted(TFDS_SHAPES))
def test_tfds_dataset_loads_from_a_prepared_data_dir_offline(name, tfds_dir, offline):
    ds = data.load(name, data_dir=tfds_dir)
    assert ds.x_train.shape == (60,) + TFDS_SHAPES[name]
    assert ds.x_test.shape == (30,) + TFDS_SHAPES[name]
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.input_shape == TFDS_SHAPES[name]
    assert ds.num_classes == 10 and len(ds.class_names) == 10


def test_tfds_images_are_scaled_by_255_and_keep_their_labels(tfds_dir, offline):
    ds = data.load("cifar10", data_dir=tfds_dir, label_noise=0.2)
    np.testing.assert_allclose(
        ds.x_train[:, 1, 1, 0] * 255, 20 * ds.y_train_clean + 5, atol=1e-4
    )
    np.testing.assert_allclose(
        ds.x_test[:, 1, 1, 0] * 255, 20 * ds.y_test + 5, atol=1e-4
    )


def test_tfds_validation_comes_from_official_train_and_test_is_official_test(
    tfds_dir, offline
):
    ds = data.load("mnist", train_size=20, validation_size=10, data_dir=tfds_dir)
    train_ids, val_ids, test_ids = ids(ds.x_train), ids(ds.x_val), ids(ds.x_test)
    assert np.bincount(ds.y_train, minlength=10).tolist() == [2] * 10
    assert np.bincount(ds.y_val, minlength=10).tolist() == [1] * 10
    assert set(train_ids).isdisjoint(val_ids)
    assert set(train_ids) | set(val_ids) <= set(range(60))
    assert sorted(test_ids) == list(range(100, 130))


def test_tfds_train_size_none_takes_all_official_train_less_validation(
    tfds_dir, offline
):
    ds = data.load("mnist", validation_size=10, data_dir=tfds_dir)
    assert len(ds.y_train) == 50
    assert sorted(np.concatenate([ids(ds.x_train), ids(ds.x_val)])) == list(range(60))


def test_tfds_test_size_subsamples_the_official_test_split_stratified(
    tfds_dir, offline
):
    ds = data.load("svhn", test_size=10, data_dir=tfds_dir)
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1] * 10
    assert set(ids(ds.x_test)) <= set(range(100, 130))


def test_tfds_label_noise_flips_the_exact_count_of_training_labels(tfds_dir, offline):
    ds = data.load("mnist", train_size=40, label_noise=0.25, data_dir=tfds_dir)
    assert int(ds.noisy_mask.sum()) == 10
    assert np.all(ds.y_train[ds.noisy_mask] != ds.y_train_clean[ds.noisy_mask])


def test_tfds_same_seed_same_split(tfds_dir, offline):
    a = data.load("mnist", train_size=20, seed=3, data_dir=tfds_dir)
    b = data.load("mnist", train_size=20, seed=3, data_dir=tfds_dir)
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_tfds_class_names_come_from_the_dataset(tfds_dir, offline):
    ds = data.load("fashion_mnist", data_dir=tfds_dir)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


def test_tfds_train_size_too_large_says_how_many_exist(tfds_dir, offline):
    with pytest.raises(ValueError, match="60 official training examples"):
        data.load("mnist", train_size=61, data_dir=tfds_dir)
    with pytest.raises(ValueError, match="30 official test examples"):
        data.load("mnist", test_size=31, data_dir=tfds_dir)


def test_data_dir_defaults_to_the_environment_variable(tfds_dir, offline, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, tfds_dir)
    assert len(data.load("mnist").y_train) == 60


@pytest.mark.parametrize("data_dir", [123, ["/tmp"]])
def test_a_data_dir_that_is_not_a_path_is_a_type_error_naming_it(data_dir, offline):
    with pytest.raises(TypeError, match=re.escape(
            f"Argument `data_dir` must be None or a path. Received: data_dir={data_dir!r}")):
        data.load("mnist", data_dir=data_dir)


def test_an_empty_data_dir_is_refused_not_taken_for_the_current_folder(
    tmp_path, monkeypatch, offline
):
    # Taken for it, a download (download=None, with network) would go there.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"Argument `data_dir` must be None or a path; an "
                                         r"empty path names no folder.*Received: data_dir=''"):
        data.load("mnist", data_dir="")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# tensorflow-datasets: missing data, no network


def test_missing_dataset_with_download_false_fails_fast_without_network(
    tmp_path, offline
):
    # `offline` fails the test on any probe, connection or download.
    with pytest.raises(data.DatasetNotAvailableError) as info:
        data.load("cifar10", data_dir=str(tmp_path), download=False)
    assert isinstance(info.value, OSError)
    message = str(info.value)
    assert f"data_dir={str(tmp_path)!r}" in message and "'digits'" in message


def test_missing_dataset_logs_nothing_of_tfds_before_its_error(tmp_path, offline, caplog):
    # A folder of the dataset's version without its data: tfds warns through
    # absl ("Variant folder ... has no dataset_info.json"); `load`'s error
    # says it all.
    import tensorflow_datasets as tfds

    os.makedirs(tmp_path / "cifar10" / str(tfds.builder_cls("cifar10").VERSION))
    with caplog.at_level(logging.WARNING, logger="absl"):
        with pytest.raises(data.DatasetNotAvailableError):
            data.load("cifar10", data_dir=str(tmp_path), download=False)
        assert logging.getLogger("absl").level == logging.WARNING  # put back
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []


def test_missing_dataset_with_unreachable_host_fails_fast_without_downloading(
    tmp_path, monkeypatch
):
    import tensorflow_datasets as tfds

    def no_download(*args, **kwargs):
        raise AssertionError("load() tried to download")

    monkeypatch.setattr(data, "can_reach_download_host", lambda host, port: False)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(data.DatasetNotAvailableError, match="could not be reached"):
        data.load("mnist", data_dir=str(tmp_path))


def test_download_true_skips_the_probe_and_downloads(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    class Downloaded(Exception):
        pass

    def fake_download(self, *args, **kwargs):
        raise Downloaded

    def no_probe(*args, **kwargs):
        raise AssertionError("download=True should not probe")

    monkeypatch.setattr(data, "can_reach_download_host", no_probe)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fake_download)
    with pytest.raises(Downloaded):
        data.load("mnist", data_dir=str(tmp_path), download=True)


def test_module_missing_for_download_is_named_with_its_install_command(
    tmp_path, monkeypatch
):
    import tensorflow_datasets as tfds

    def missing_module(self, *args, **kwargs):
        raise ModuleNotFoundError("No module", name="importlib_resources")

    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", missing_module
    )
    with pytest.raises(ImportError, match="pip install importlib_resources"):
        data.load("mnist", data_dir=str(tmp_path), download=True)


@pytest.fixture
def no_proxy_env(monkeypatch):
    for var in (
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(var, raising=False)


def closed_local_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_probe_reports_an_unreachable_host(no_proxy_env):
    assert not data.can_reach_download_host(
        "127.0.0.1", closed_local_port(), timeout=1.0
    )
    assert not data.can_reach_download_host("host.invalid", 443, timeout=1.0)


def test_probe_gives_up_on_a_hanging_connection_after_its_timeout(
        no_proxy_env, monkeypatch):
    # A connection (or DNS lookup) that hangs: it completes only when the test
    # releases it, after the probe has answered. A probe that waited for it
    # would get the connection and answer True (the release also comes by
    # itself after 60 s, so such a probe fails rather than hangs the suite).
    release, timeouts = threading.Event(), []

    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def hanging_connection(address, timeout):
        timeouts.append(timeout)
        release.wait(60)
        return Connection()

    monkeypatch.setattr(socket, "create_connection", hanging_connection)
    try:
        assert not data.can_reach_download_host("example.org", 443, timeout=0.2)
    finally:
        release.set()
    assert timeouts == [0.2]


def test_probe_reports_a_listening_host_as_reachable(no_proxy_env):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert data.can_reach_download_host(
            "127.0.0.1", server.getsockname()[1], timeout=2.0
        )


def test_probe_goes_through_the_configured_proxy(no_proxy_env, monkeypatch):
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert data.can_reach_download_host("host.invalid", 443, timeout=2.0)


@pytest.mark.parametrize("call, match", [
    (lambda rng: data.balanced_class_counts([3, 4], 8, rng),
     r"`size` must be at most 7.*Received: size=8"),
    (lambda rng: data.balanced_class_counts([3, -1], 1, rng), r"`class_sizes`"),
    (lambda rng: data.balanced_sample(np.array([0, 1, 1]), np.arange(3), 4, 2, rng),
     r"`size` must be at most 3.*Received: size=4"),
    # Unchecked, a repeated candidate was sampled twice, a fractional one
    # truncated (0.7 to 0), and a class outside [0, num_classes) never drawn.
    (lambda rng: data.balanced_sample(np.array([0, 1]), [0, 0, 0, 1], 4, 2, rng),
     r"`candidates` must hold distinct indices. Received: candidates with 2 repeats"),
    (lambda rng: data.balanced_sample(np.array([0, 1]), [0.7, 1.2], 2, 2, rng),
     r"`candidates` must be a 1-D array of whole indices into `labels`"),
    (lambda rng: data.balanced_sample(np.array([0, 1]), [0, 2], 2, 2, rng),
     r"`candidates` must be indices into `labels` in \[0, 2\). Received: candidates in"),
    (lambda rng: data.balanced_sample(np.array([0, 1, 2, 2]), np.arange(4), 4, 2, rng),
     r"`labels` must be class indices \(at the candidates\) in \[0, 2\)"),
    (lambda rng: data.balanced_sample(np.array([[0, 1]]), np.arange(2), 2, 2, rng),
     r"`labels` must be a 1-D array of whole class indices"),
    (lambda rng: data.with_symmetric_label_noise(np.zeros(10, int), 1.0, 3, rng),
     r"`fraction` must be a number in \[0, 1\). Received: fraction=1.0"),
    (lambda rng: data.with_symmetric_label_noise(np.zeros(10, int), -0.1, 3, rng),
     r"Received: fraction=-0.1"),
    (lambda rng: data.with_symmetric_label_noise(np.zeros(10, int), 0.5, 1, rng),
     r"`num_classes` must be >= 2.*Received: num_classes=1"),
    (lambda rng: data.with_symmetric_label_noise(np.array([0, 3]), 0.5, 3, rng),
     r"`labels` must be class indices in \[0, 3\)"),
])
def test_the_sampling_helpers_name_a_bad_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.random.default_rng(0))


@pytest.mark.parametrize("rng", [None, 0])
def test_balanced_sample_names_an_rng_that_is_not_a_generator(rng):
    # It raised AttributeError: 'NoneType' object has no attribute 'permutation'.
    with pytest.raises(TypeError, match=r"`rng` must be a numpy.random.Generator.*"
                       rf"Received: rng={rng}$"):
        data.balanced_sample(np.array([0, 1]), np.arange(2), 2, 2, rng)


def test_balanced_sample_takes_labels_as_a_list():
    picked = data.balanced_sample([0, 0, 1, 1], [0, 1, 2, 3], 2, 2,
                                  np.random.default_rng(0))
    assert sorted(np.asarray([0, 0, 1, 1])[picked].tolist()) == [0, 1]


@pytest.mark.parametrize("host, port, error, message", [
    ("", 443, TypeError, r"`host` must be a host name or address .*Received: host=''"),
    (1, 443, TypeError, r"Received: host=1"),
    ("host.invalid", -1, ValueError, r"`port` must be an integer in \[0, 65535\]. Received: port=-1"),
    ("host.invalid", 70000, ValueError, r"Received: port=70000"),
    ("host.invalid", 80.5, TypeError, r"Received: port=80.5"),
])
def test_the_download_probe_names_a_host_or_port_that_is_none(host, port, error, message):
    # Each read as "not reachable" (False); host=1 printed a traceback from
    # the probe's thread.
    with pytest.raises(error, match=message):
        data.can_reach_download_host(host, port, timeout=0.5)
