"""Image classification data as NumPy arrays, split and corrupted reproducibly.

`load(name, ...)` returns a `Dataset`: train / validation / test arrays with
images as float32 NHWC in [0, 1] and labels as int32 class indices.

- `"digits"` is scikit-learn's embedded 8x8 digits (1,797 images): it needs no
  network and no files, which is why the course and the tests use it.
- `"mnist"`, `"fashion_mnist"`, `"cifar10"` and `"svhn"` come through
  tensorflow-datasets (tfds). They are read from a prepared tfds directory
  (`data_dir`); when the data is not there and downloading is allowed, tfds
  downloads and prepares it once. Without network and without a prepared copy
  `load` raises `DatasetNotAvailableError` within seconds instead of hanging.

Splits are class-balanced and seeded: the training set depends only on
`seed` and `train_size` (not on `validation_size`, `test_size` or
`label_noise`), and the noisy labels depend only on `seed`, `train_size` and
`label_noise`. Label noise is symmetric ("flip to a different class, uniform
over the others") and touches the training labels only; the clean training
labels are kept in `Dataset.y_train_clean`.
"""

import contextlib
import dataclasses
import logging
import numbers
import os
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np

from robustlab import validation

__all__ = [
    "AVAILABLE_DATASETS",
    "CONNECT_TIMEOUT_S",
    "DATA_DIR_ENV",
    "DIGITS_DEFAULT_TRAIN_SIZE",
    "Dataset",
    "DatasetNotAvailableError",
    "balanced_class_counts",
    "balanced_sample",
    "can_reach_download_host",
    "load",
    "with_symmetric_label_noise",
]

DIGITS_DEFAULT_TRAIN_SIZE = 1000
"""Training examples `load("digits")` takes when `train_size=None` (100 a class;
the other 797 become the test set), the course's `quick` setting."""

DATA_DIR_ENV = "ROBUSTLAB_DATA_DIR"
"""Environment variable naming the tfds data directory when `data_dir=None`."""

CONNECT_TIMEOUT_S = 3.0
"""How long the pre-download connectivity probe waits before giving up."""

# robustlab name -> (tfds builder name, (host, port) its files download from).
_TFDS_DATASETS = {
    "mnist": ("mnist", ("storage.googleapis.com", 443)),
    "fashion_mnist": (
        "fashion_mnist",
        ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    ),
    "cifar10": ("cifar10", ("www.cs.toronto.edu", 443)),
    "svhn": ("svhn_cropped", ("ufldl.stanford.edu", 80)),
}

AVAILABLE_DATASETS = ("digits",) + tuple(_TFDS_DATASETS)
"""The names `load` accepts."""


class DatasetNotAvailableError(OSError):
    """A tfds dataset is not prepared locally and cannot be downloaded now.

    Raised by `load` when the data is missing from `data_dir` and either
    `download=False` or the download host cannot be reached. It is an
    `OSError`, so `except OSError` also catches it.
    """


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train / validation / test arrays of one image classification dataset.

    Images are float32 of shape `(n,) + input_shape` (NHWC) with values in
    `value_range`; labels are int32 class indices of shape `(n,)`.

    Attributes:
        name: the name passed to `load`, e.g. `"digits"`.
        x_train, y_train: training images and (possibly noisy) labels.
        x_val, y_val: validation images and labels (empty when
            `validation_size=0`).
        x_test, y_test: test images and labels.
        y_train_clean: the training labels before label noise; equal to
            `y_train` when `label_noise=0`.
        num_classes: number of classes.
        input_shape: shape of one image, e.g. `(8, 8, 1)`.
        value_range: `(low, high)` bounds of the pixel values, `(0.0, 1.0)`.
        class_names: one name per class index.
        noisy_mask: bool array over training examples, True where the label
            was replaced (`y_train != y_train_clean`).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_train_clean: np.ndarray
    num_classes: int
    input_shape: tuple
    value_range: tuple
    class_names: tuple
    noisy_mask: np.ndarray

    def __repr__(self):
        return (
            f"Dataset(name={self.name!r}, train={len(self.y_train)}, "
            f"val={len(self.y_val)}, test={len(self.y_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"noisy_labels={int(self.noisy_mask.sum())})"
        )

    def summary(self):
        """A few lines describing the splits, for printing in notebooks and logs.

        Example:

        >>> from robustlab.data import load
        >>> print(load("digits", seed=0, label_noise=0.2).summary())
        digits: 10 classes, images (8, 8, 1) in [0, 1]
          train 1000 (200 noisy labels, 20.0%)
          val   0
          test  797
        """
        n_train = len(self.y_train)
        n_noisy = int(self.noisy_mask.sum())
        noisy_fraction = n_noisy / n_train if n_train else 0.0
        low, high = self.value_range
        return (
            f"{self.name}: {self.num_classes} classes, images "
            f"{self.input_shape} in [{low:g}, {high:g}]\n"
            f"  train {n_train} ({n_noisy} noisy labels, {noisy_fraction:.1%})\n"
            f"  val   {len(self.y_val)}\n"
            f"  test  {len(self.y_test)}"
        )


def load(
    name,
    train_size=None,
    seed=0,
    *,
    validation_size=0,
    test_size=None,
    label_noise=0.0,
    data_dir=None,
    download=None,
):
    """Load a dataset as class-balanced, seeded train / validation / test arrays.

    Splits are class-balanced ("stratified" with equal shares): each class
    gets `size // num_classes` examples, the remaining `size % num_classes`
    go one each to seed-chosen classes, and a class with too few examples
    passes its shortfall on to the others. For `"digits"` all 1,797 images
    form one pool: training examples are drawn first, then validation, and
    the rest (or a balanced `test_size` of it) is the test set. For the tfds
    datasets training and validation examples come from the official train
    split and the test set is the official test split (or a balanced
    `test_size` subsample of it).

    With `label_noise=p`, exactly `round(p * len(y_train))` training labels,
    chosen by `seed`, are replaced by a different class drawn uniformly from
    the other `num_classes - 1`. Validation and test labels stay clean.

    Args:
        name: one of `AVAILABLE_DATASETS`: `"digits"` (embedded, offline),
            `"mnist"`, `"fashion_mnist"`, `"cifar10"`, `"svhn"` (tfds
            `svhn_cropped`; the `extra` split is not used).
        train_size: number of training examples, a positive int. None takes
            `DIGITS_DEFAULT_TRAIN_SIZE` (1000) for `"digits"` and the whole
            official train split less `validation_size` for the tfds datasets.
        seed: non-negative int fixing the splits and the label noise.
        validation_size: number of validation examples, an int >= 0.
        test_size: number of test examples, a positive int, or None for all
            the remaining (`"digits"`) or official test examples.
        label_noise: fraction of training labels to corrupt, in [0, 1).
        data_dir: tfds data directory (tfds datasets only), a path (an empty
            one names no folder and is refused). None uses the
            environment variable `ROBUSTLAB_DATA_DIR` if set, else tfds's own
            default (`TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        download: what to do when a tfds dataset is not prepared in
            `data_dir`. None (default): probe the download host for up to
            `CONNECT_TIMEOUT_S` seconds (through the proxy named in the
            environment, if any), then download and prepare. True: download
            without the probe. False: never touch the network.

    Returns:
        A `Dataset`.

    Raises:
        ValueError: for an unknown `name` or an argument out of range, e.g.
            `train_size` larger than the examples available.
        TypeError: for an argument of the wrong type.
        DatasetNotAvailableError: (an `OSError`) when a tfds dataset is not
            prepared in `data_dir` and cannot be downloaded now.
        ImportError: when tensorflow-datasets, or a module it needs for
            downloading, is not installed.

    Example:

    >>> import numpy as np
    >>> from robustlab.data import load
    >>> data = load("digits", train_size=1000, seed=0, label_noise=0.2)
    >>> data.x_train.shape, data.x_test.shape
    ((1000, 8, 8, 1), (797, 8, 8, 1))
    >>> [int(n) for n in np.bincount(data.y_train_clean)]
    [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
    >>> int(data.noisy_mask.sum())
    200
    """
    _check_name(name)
    _check_optional_int_at_least("train_size", train_size, 1)
    validation.check_seed("seed", seed)
    validation.check_int_at_least("validation_size", validation_size, 0)
    _check_optional_int_at_least("test_size", test_size, 1)
    label_noise = _check_label_noise(label_noise)
    if download is not None and not isinstance(download, bool):
        raise TypeError(
            "Argument `download` must be None, True or False. "
            f"Received: download={download!r}"
        )
    _check_data_dir(data_dir)

    split_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    if name == "digits":
        splits, class_names = _digits_splits(
            train_size, validation_size, test_size, split_rng
        )
    else:
        splits, class_names = _tfds_splits(
            name,
            train_size,
            validation_size,
            test_size,
            split_rng,
            data_dir=data_dir,
            download=download,
        )
    (x_train, y_train_clean), (x_val, y_val), (x_test, y_test) = splits
    num_classes = len(class_names)
    y_train = with_symmetric_label_noise(
        y_train_clean, label_noise, num_classes, noise_rng
    )
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        y_train_clean=y_train_clean,
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        value_range=(0.0, 1.0),
        class_names=class_names,
        noisy_mask=y_train != y_train_clean,
    )


# ---------------------------------------------------------------------------
# Splitting and label noise (pure NumPy).


def balanced_class_counts(class_sizes, size, rng):
    """How many examples to take from each class for a class-balanced sample.

    Every class gets `size // k` (k = number of classes); the `size % k`
    left over go one each to classes chosen by `rng`. A class smaller than its
    share gives everything it has and its shortfall is shared out among the
    others the same way.

    Args:
        class_sizes: examples available in each class.
        size: total to take, at most `sum(class_sizes)`.
        rng: a `numpy.random.Generator`.

    Returns:
        int64 array of counts, one a class, summing to `size`.

    Example:

    >>> import numpy as np
    >>> from robustlab.data import balanced_class_counts
    >>> balanced_class_counts([5, 5, 5], 6, np.random.default_rng(0)).tolist()
    [2, 2, 2]
    >>> balanced_class_counts([1, 9, 9], 7, np.random.default_rng(0)).tolist()
    [1, 3, 3]
    """
    _check_rng(rng)
    given = np.asarray(class_sizes)
    if (given.ndim != 1 or given.size == 0 or not np.issubdtype(given.dtype, np.number)
            or not np.all(np.isfinite(given)) or np.any(given < 0)
            or np.any(given != np.round(given))):
        raise ValueError("Argument `class_sizes` must be a non-empty list of whole "
                         f"counts >= 0. Received: class_sizes={given.tolist()}")
    class_sizes = given.astype(np.int64)
    available = int(class_sizes.sum())
    validation.check_int_at_least("size", size, 0)
    if size > available:
        raise ValueError(f"Argument `size` must be at most {available}, the examples "
                         f"available in all classes. Received: size={size}")
    counts = np.zeros_like(class_sizes)
    remaining = int(size)
    while remaining > 0:
        open_classes = np.flatnonzero(counts < class_sizes)
        share, leftover = divmod(remaining, len(open_classes))
        if share == 0:
            counts[rng.choice(open_classes, size=leftover, replace=False)] += 1
            break
        # Give every open class its share, capped by what it has; the capped
        # classes' shortfall goes round again to those that still have room.
        added = np.minimum(share, class_sizes[open_classes] - counts[open_classes])
        counts[open_classes] += added
        remaining -= int(added.sum())
    return counts


def balanced_sample(labels, candidates, size, num_classes, rng):
    """Indices of a class-balanced random sample of `size` of `candidates`.

    Args:
        labels: int array of class indices for the whole pool.
        candidates: indices into `labels` to sample from.
        size: how many to take (at most `len(candidates)`).
        num_classes: number of classes.
        rng: a `numpy.random.Generator`.

    Returns:
        int64 array of `size` distinct indices from `candidates`, in random
        order (not grouped by class).

    Example:

    >>> import numpy as np
    >>> from robustlab.data import balanced_sample
    >>> labels = np.array([0, 0, 0, 1, 1, 1])
    >>> picked = balanced_sample(labels, np.arange(6), 4, 2, np.random.default_rng(0))
    >>> np.bincount(labels[picked]).tolist()
    [2, 2]
    """
    _check_rng(rng)
    num_classes = validation.check_int_at_least("num_classes", num_classes, 1)
    labels = _whole_numbers("labels", labels, "class indices")
    # Cast unchecked, 0.7 would become index 0, and a repeated index would be
    # sampled twice where the sample promises distinct ones.
    candidates = _whole_numbers("candidates", candidates, "indices into `labels`")
    _check_in_range("candidates", candidates, len(labels), "indices into `labels`")
    if np.unique(candidates).size != candidates.size:
        raise ValueError(
            "Argument `candidates` must hold distinct indices. Received: "
            f"candidates with {candidates.size - np.unique(candidates).size} repeats")
    candidates = candidates.astype(np.int64)
    # A class outside [0, num_classes) would be left out of every sample.
    _check_in_range("labels", labels[candidates], num_classes,
                    "class indices (at the candidates)")
    validation.check_int_at_least("size", size, 0)
    if size > len(candidates):
        raise ValueError(f"Argument `size` must be at most {len(candidates)}, the number "
                         f"of candidates. Received: size={size}")
    by_class = [
        rng.permutation(candidates[labels[candidates] == c]) for c in range(num_classes)
    ]
    counts = balanced_class_counts([len(c) for c in by_class], size, rng)
    chosen = np.concatenate(
        [members[:count] for members, count in zip(by_class, counts, strict=True)]
    )
    return rng.permutation(chosen)


def with_symmetric_label_noise(labels, fraction, num_classes, rng):
    """A copy of `labels` with exactly `round(fraction * n)` of them flipped.

    The flipped positions are drawn without replacement; each becomes a class
    drawn uniformly from the `num_classes - 1` classes other than its own.

    Args:
        labels: int array of class indices, shape `(n,)`.
        fraction: fraction to flip, in [0, 1).
        num_classes: number of classes (>= 2 when `fraction > 0`).
        rng: a `numpy.random.Generator`.

    Returns:
        int32 array of shape `(n,)`.

    Example:

    >>> import numpy as np
    >>> from robustlab.data import with_symmetric_label_noise
    >>> clean = np.zeros(10, dtype=np.int32)
    >>> noisy = with_symmetric_label_noise(clean, 0.3, 4, np.random.default_rng(0))
    >>> int((noisy != clean).sum())
    3
    """
    fraction = _check_label_noise(fraction, "fraction")
    num_classes = validation.check_int_at_least("num_classes", num_classes, 1)
    _check_rng(rng)
    given = _whole_numbers("labels", labels, "class indices")
    _check_in_range("labels", given, num_classes, "class indices")
    noisy = np.array(given, dtype=np.int32, copy=True)
    n_flipped = round(fraction * len(noisy))
    if n_flipped and num_classes < 2:
        raise ValueError("Argument `num_classes` must be >= 2 to flip labels to another "
                         f"class. Received: num_classes={num_classes}")
    if n_flipped == 0:
        return noisy
    flipped = rng.choice(len(noisy), size=n_flipped, replace=False)
    # Adding 1..k-1 modulo k reaches every other class exactly once, so the
    # new class is uniform over the others and never the original.
    shift = rng.integers(1, num_classes, size=n_flipped)
    noisy[flipped] = (noisy[flipped] + shift) % num_classes
    return noisy


def _take(images, labels, indices, scale):
    # Convert only the selected examples, so a large uint8 pool is never
    # materialised as float32 in full.
    x = images[indices].astype(np.float32) / np.float32(scale)
    if x.ndim == 3:
        x = x[..., None]  # grey-scale images get a channel axis (NHWC)
    return x, labels[indices].astype(np.int32)


# ---------------------------------------------------------------------------
# digits


def _digits_splits(train_size, validation_size, test_size, rng):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images, digits.target.astype(np.int64)
    num_classes = len(digits.target_names)
    n_total = len(labels)
    if train_size is None:
        train_size = DIGITS_DEFAULT_TRAIN_SIZE
    _check_sizes_fit(
        "digits",
        n_total,
        train_size=train_size,
        validation_size=validation_size,
        test_size=test_size,
    )
    pool = np.arange(n_total)
    train = balanced_sample(labels, pool, train_size, num_classes, rng)
    pool = np.setdiff1d(pool, train)
    val = balanced_sample(labels, pool, validation_size, num_classes, rng)
    pool = np.setdiff1d(pool, val)
    if test_size is None:
        test = rng.permutation(pool)
    else:
        test = balanced_sample(labels, pool, test_size, num_classes, rng)
    # The 8x8 digit pixels are counts 0..16, so /16 maps them onto [0, 1].
    splits = tuple(_take(images, labels, idx, 16.0) for idx in (train, val, test))
    return splits, tuple(str(t) for t in digits.target_names)


def _check_sizes_fit(name, n_pool, *, train_size, validation_size, test_size):
    # digits: train, validation and test all come from one pool of n_pool, and
    # the test set must not come out empty.
    needed_for_test = test_size if test_size is not None else 1
    if train_size + validation_size + needed_for_test > n_pool:
        raise ValueError(
            f"Arguments `train_size`, `validation_size` and `test_size` must "
            f"together fit in the {n_pool} examples of {name!r}, leaving at "
            f"least 1 for the test set when test_size=None. Received: "
            f"train_size={train_size}, validation_size={validation_size}, "
            f"test_size={test_size}"
        )


# ---------------------------------------------------------------------------
# tensorflow-datasets


def _tfds_splits(
    name, train_size, validation_size, test_size, rng, *, data_dir, download
):
    tfds = _import_tfds()
    tfds_name, (host, port) = _TFDS_DATASETS[name]
    with _absl_warnings_silenced():
        builder = tfds.builder(tfds_name, data_dir=_resolve_data_dir(data_dir))
    _ensure_prepared(builder, name, download, host, port)

    splits = builder.info.splits
    n_train = splits["train"].num_examples
    n_test = splits["test"].num_examples
    if validation_size > n_train - 1:
        raise ValueError(
            f"Argument `validation_size` must leave at least 1 of the {n_train} "
            f"official training examples of {name!r} for training. "
            f"Received: validation_size={validation_size}"
        )
    if train_size is not None and train_size + validation_size > n_train:
        raise ValueError(
            f"Argument `train_size` plus validation_size={validation_size} must "
            f"fit in the {n_train} official training examples of {name!r}, so "
            f"train_size <= {n_train - validation_size}. "
            f"Received: train_size={train_size}"
        )
    if test_size is not None and test_size > n_test:
        raise ValueError(
            f"Argument `test_size` must be at most the {n_test} official test "
            f"examples of {name!r}. Received: test_size={test_size}"
        )

    images, labels = _read_tfds_split(tfds, builder, "train")
    test_images, test_labels = _read_tfds_split(tfds, builder, "test")
    label_feature = builder.info.features["label"]
    num_classes = label_feature.num_classes

    pool = np.arange(len(labels))
    if train_size is None:
        # Carve validation out first; everything else is for training.
        val = balanced_sample(labels, pool, validation_size, num_classes, rng)
        train = rng.permutation(np.setdiff1d(pool, val))
    else:
        train = balanced_sample(labels, pool, train_size, num_classes, rng)
        rest = np.setdiff1d(pool, train)
        val = balanced_sample(labels, rest, validation_size, num_classes, rng)
    test_pool = np.arange(len(test_labels))
    if test_size is None:
        test = test_pool
    else:
        test = balanced_sample(test_labels, test_pool, test_size, num_classes, rng)

    # tfds images are uint8 0..255.
    splits = (
        _take(images, labels, train, 255.0),
        _take(images, labels, val, 255.0),
        _take(test_images, test_labels, test, 255.0),
    )
    return splits, tuple(str(n) for n in label_feature.names)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "Loading the tfds datasets needs `tensorflow-datasets` (and "
            "`tensorflow`): `pip install tensorflow-datasets`. The embedded "
            "'digits' dataset needs neither."
        ) from error
    return tfds


def _resolve_data_dir(data_dir):
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        return None  # tfds's default: TFDS_DATA_DIR or ~/tensorflow_datasets
    return os.path.expanduser(os.fsdecode(data_dir))


@contextlib.contextmanager
def _absl_warnings_silenced():
    """Looking for a dataset, tfds logs through absl (Python's logger
    "absl") what it finds on the way, e.g. "Variant folder ... has no
    dataset_info.json" where the data is missing; `load` says what is
    wrong itself. Only errors pass here; the logger's level is put back
    afterwards."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(logger.getEffectiveLevel(), logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_tfds_split(tfds, builder, split):
    images, labels = tfds.as_numpy(
        builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
    )
    return images, labels.astype(np.int64)


def _ensure_prepared(builder, name, download, host, port):
    """Return if `builder`'s data is on disk, else download it or raise."""
    with _absl_warnings_silenced():
        prepared = builder.is_prepared()
    if prepared:
        return
    data_dir = os.fspath(builder.data_dir_root)
    if download is False:
        raise DatasetNotAvailableError(
            _not_prepared_message(name, data_dir, "download=False was given")
        )
    if download is None and not can_reach_download_host(host, port):
        raise DatasetNotAvailableError(
            _not_prepared_message(
                name,
                data_dir,
                f"the download host {host}:{port} could not be reached within "
                f"{CONNECT_TIMEOUT_S:g} s (no network?)",
            )
        )
    try:
        builder.download_and_prepare()
    except ModuleNotFoundError as error:
        # tensorflow-datasets 4.9.x imports `importlib_resources` only when it
        # prepares a dataset, and on Python >= 3.11 nothing installs it.
        raise ImportError(
            f"tensorflow-datasets needs the module {error.name!r} to download "
            f"and prepare {name!r}: `pip install {error.name}`."
        ) from error


def _not_prepared_message(name, data_dir, reason):
    return (
        f"Dataset {name!r} is not prepared in data_dir={data_dir!r} and cannot "
        f"be downloaded now: {reason}. To get it, run "
        f"`robustlab.data.load({name!r})` once on a machine with network, or "
        "copy a prepared tensorflow-datasets directory there (pass its "
        f"location as `data_dir=` or set {DATA_DIR_ENV}). The embedded "
        "'digits' dataset works offline."
    )


def can_reach_download_host(host, port, timeout=CONNECT_TIMEOUT_S):
    """Whether a TCP connection to `host:port` opens within `timeout` seconds.

    When the environment names a proxy for the host's scheme (and `no_proxy`
    does not exempt the host), the proxy is probed instead, since that is
    where downloads would go. The probe runs in a daemon thread so that a
    slow DNS lookup cannot outlast `timeout` either.

    Args:
        host: host name or address.
        port: TCP port (443 probes the https proxy, others the http proxy).
        timeout: seconds to wait, > 0.

    Returns:
        bool.

    Example:

    >>> from robustlab.data import can_reach_download_host
    >>> can_reach_download_host("host.invalid", 443, timeout=0.5)
    False
    """
    timeout = validation.check_finite_positive("timeout", timeout)
    if not isinstance(host, str) or not host:
        # An empty or non-string host failed in the probe's thread (a
        # traceback there) and read as "not reachable".
        raise TypeError("Argument `host` must be a host name or address (a non-empty "
                        f"str). Received: host={host!r}")
    port = validation.check_int_in_range("port", port, 0, 65535)
    host, port = _through_proxy(host, port)
    reached = []

    def attempt():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                reached.append(True)
        except OSError:
            pass

    prober = threading.Thread(target=attempt, daemon=True)
    prober.start()
    prober.join(timeout)
    return bool(reached)


def _through_proxy(host, port):
    scheme = "https" if port == 443 else "http"
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return host, port
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


# ---------------------------------------------------------------------------
# Argument checks.


def _check_name(name):
    if not isinstance(name, str) or name not in AVAILABLE_DATASETS:
        available = ", ".join(repr(n) for n in AVAILABLE_DATASETS)
        raise ValueError(
            f"Argument `name` must be one of the available datasets: "
            f"{available}. Received: name={name!r}"
        )


def _check_data_dir(data_dir):
    """None, or a path (str, bytes or os.PathLike) that is not empty: an
    empty one would be taken for the current folder, and tfds would
    download there."""
    if data_dir is None:
        return
    try:
        path = os.fspath(data_dir)
    except TypeError:
        raise TypeError(
            "Argument `data_dir` must be None or a path. "
            f"Received: data_dir={data_dir!r}"
        ) from None
    if path in ("", b""):
        raise ValueError(
            "Argument `data_dir` must be None or a path; an empty path names no "
            f"folder (None uses {DATA_DIR_ENV} or tfds's default). "
            f"Received: data_dir={data_dir!r}"
        )


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_optional_int_at_least(arg, value, minimum):
    if value is None:
        return
    if not _is_int(value):
        raise TypeError(
            f"Argument `{arg}` must be None or an integer >= {minimum}. "
            f"Received: {arg}={value!r}"
        )
    if value < minimum:
        raise ValueError(
            f"Argument `{arg}` must be None or an integer >= {minimum}. "
            f"Received: {arg}={value!r}"
        )


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError("Argument `rng` must be a numpy.random.Generator, e.g. "
                        f"np.random.default_rng(0). Received: rng={rng!r}")


def _whole_numbers(name, values, what):
    """`values` as a 1-D array of whole numbers (integers, or floats that
    are whole), or a ValueError naming `name`."""
    given = np.asarray(values)
    if given.ndim != 1 or not (given.size == 0 or np.issubdtype(given.dtype, np.integer) or (
            np.issubdtype(given.dtype, np.floating) and np.all(given == np.round(given)))):
        # Cast first, 2.7 would become class 2 and 2**32 + 1 class 1.
        raise ValueError(
            f"Argument `{name}` must be a 1-D array of whole {what}. "
            f"Received: {name} of dtype {given.dtype} and shape {given.shape}")
    return given


def _check_in_range(name, values, stop, what):
    if values.size and (values.min() < 0 or values.max() >= stop):
        raise ValueError(
            f"Argument `{name}` must be {what} in [0, {stop}). "
            f"Received: {name} in [{values.min()}, {values.max()}]")


def _check_label_noise(label_noise, name="label_noise"):
    if not isinstance(label_noise, numbers.Real) or isinstance(label_noise, bool):
        raise TypeError(
            f"Argument `{name}` must be a number in [0, 1). "
            f"Received: {name}={label_noise!r}"
        )
    if not 0.0 <= label_noise < 1.0:  # also rejects NaN
        raise ValueError(
            f"Argument `{name}` must be a number in [0, 1). "
            f"Received: {name}={label_noise!r}"
        )
    return float(label_noise)
