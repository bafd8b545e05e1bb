"""The tf.data pipelines robustlab builds from NumPy arrays on TensorFlow."""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("tf.data pipelines are TensorFlow's", allow_module_level=True)

from robustlab.backend.tensorflow import data  # noqa: E402

X = np.arange(10, dtype="float32").reshape(5, 2)
Y = np.arange(5)


def _batches(dataset):
    return [tuple(t.numpy() for t in batch) for batch in dataset]


def test_batched_serves_the_arrays_in_order_in_batches():
    batches = _batches(data.batched((X, Y), 2))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), X)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), Y)


def _rows_of_batches(dataset, batches):
    return np.concatenate([b[1] for b in _batches(dataset.take(batches))])


def test_epoch_shuffled_streams_the_permutations_from_the_epoch_set_last():
    def permutation(epoch):
        return np.roll(np.arange(5), epoch)

    dataset, set_epoch, _ = data.epoch_shuffled((X, Y), 2, permutation, steps=3)
    for epoch in (0, 3):
        set_epoch(epoch)
        np.testing.assert_array_equal(
            _rows_of_batches(dataset, 6),
            np.concatenate([permutation(epoch), permutation(epoch + 1)]))


def test_epoch_shuffled_ends_each_epoch_with_its_short_batch():
    dataset, set_epoch, _ = data.epoch_shuffled(
        (X, Y), 2, lambda epoch: np.roll(np.arange(5), epoch), steps=3)
    set_epoch(0)
    assert [len(b[1]) for b in _batches(dataset.take(6))] == [2, 2, 1, 2, 2, 1]


def _stream_noting_its_epochs():
    """An epoch stream of 3 batches an epoch, and the list of the epochs whose
    order it has computed."""
    calls = []

    def permutation(epoch):
        calls.append(epoch)
        return np.roll(np.arange(5), epoch)

    dataset, set_epoch, _ = data.epoch_shuffled((X, Y), 2, permutation, steps=3)
    set_epoch(0)
    return dataset, calls


def test_epoch_shuffled_computes_each_epochs_order_once():
    dataset, calls = _stream_noting_its_epochs()
    _batches(dataset.take(9))
    assert calls == [0, 1, 2]


def test_epoch_shuffled_computes_an_epochs_order_only_when_its_first_batch_is_asked_for():
    # The permutation is Python: computed ahead, it would run in a thread of
    # tf.data's own, where the garbage collector can free the iterator that
    # owns the thread and its destructor then waits for that thread forever.
    import time

    dataset, calls = _stream_noting_its_epochs()
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    time.sleep(0.5)  # time enough for a thread reading ahead to ask for epoch 1
    assert calls == [0]
    next(iterator)
    assert calls == [0, 1]


def test_epoch_shuffled_iterators_started_at_other_epochs_each_serve_their_own():
    # Kept between fit calls, one stream can have an iterator left from the
    # last call while the next call's reads from another epoch.
    def permutation(epoch):
        return np.roll(np.arange(5), epoch)

    dataset, set_epoch, _ = data.epoch_shuffled((X, Y), 5, permutation, steps=1)
    set_epoch(0)
    earlier = iter(dataset)
    first = [next(earlier)[1].numpy()]
    set_epoch(7)
    later = iter(dataset)
    second = []
    for _ in range(3):
        first.append(next(earlier)[1].numpy())
        second.append(next(later)[1].numpy())
    np.testing.assert_array_equal(first, [permutation(e) for e in range(4)])
    np.testing.assert_array_equal(second, [permutation(e) for e in range(7, 10)])


def test_epoch_shuffled_reads_the_first_epoch_when_iteration_starts():
    dataset, set_epoch, _ = data.epoch_shuffled(
        (X, Y), 5, lambda epoch: np.roll(np.arange(5), epoch), steps=1)
    iterator = iter(dataset)  # made before the epoch is set: read at the first batch
    set_epoch(2)
    np.testing.assert_array_equal(next(iterator)[1].numpy(), np.roll(np.arange(5), 2))


def test_epoch_shuffled_serves_the_first_steps_batches_of_each_epoch():
    def permutation(epoch):
        return np.roll(np.arange(5), epoch)

    dataset, set_epoch, _ = data.epoch_shuffled((X, Y), 2, permutation, steps=2)
    set_epoch(1)
    np.testing.assert_array_equal(
        _rows_of_batches(dataset, 4),
        np.concatenate([permutation(1)[:4], permutation(2)[:4]]))


def test_epoch_shuffled_is_endless_so_that_one_iterator_serves_a_fit():
    import tensorflow as tf

    dataset, _, fit_steps = data.epoch_shuffled((X, Y), 2, lambda epoch: np.arange(5),
                                                steps=3)
    assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY
    assert fit_steps == 3  # fit's steps_per_epoch: Keras needs it to end an epoch


def test_epoch_shuffled_not_endless_serves_one_epoch():
    def permutation(epoch):
        return np.roll(np.arange(5), epoch)

    dataset, set_epoch, fit_steps = data.epoch_shuffled((X, Y), 2, permutation, steps=2,
                                                     endless=False)
    set_epoch(4)
    assert dataset.cardinality() == 2
    assert fit_steps is None
    np.testing.assert_array_equal(np.concatenate([b[1] for b in _batches(dataset)]),
                                  permutation(4)[:4])


@pytest.mark.parametrize("pipeline", ["batched", "epoch_shuffled"])
def test_pipelines_run_without_autotuning(pipeline):
    # Autotuning's background thread made deleting an iterator wait for its
    # next wake-up (65 ms on average on 2 cores), and Keras deletes one at
    # the end of every epoch and every evaluate call.
    if pipeline == "batched":
        dataset = data.batched((X, Y), 2)
    else:
        dataset, _, _ = data.epoch_shuffled((X, Y), 2, lambda epoch: np.arange(5), steps=3)
    assert dataset.options().autotune.enabled is False


# -- the endless stream's iterator, kept between fit calls --------------------


def _roll(epoch):
    return np.roll(np.arange(5), epoch)


def _read_epoch(dataset, stream, epoch, batches=3):
    """What `fit` does over one epoch of `steps` = 3 batches of 2."""
    stream(epoch)
    iterator = iter(dataset)
    rows = []
    for _ in range(batches):
        rows.append(next(iterator)[1].numpy())
        stream.batches_read(iterator, 1)
    stream.epoch_ended()
    return iterator, np.concatenate(rows)


def test_the_stream_hands_its_iterator_to_a_call_starting_where_it_stands():
    dataset, stream, _ = data.epoch_shuffled((X, Y), 2, _roll, steps=3)
    first, rows = _read_epoch(dataset, stream, 0)
    np.testing.assert_array_equal(rows, _roll(0))
    second, rows = _read_epoch(dataset, stream, 1)
    assert second is first
    np.testing.assert_array_equal(rows, _roll(1))


@pytest.mark.parametrize("case", ["another epoch", "part of an epoch read", "abandoned"])
def test_the_stream_starts_a_new_iterator_where_the_kept_one_does_not_stand_at_the_epoch(
        case):
    dataset, stream, _ = data.epoch_shuffled((X, Y), 2, _roll, steps=3)
    next_epoch = 5 if case == "another epoch" else 1
    first, _ = _read_epoch(dataset, stream, 0, batches=2 if case == "part of an epoch read" else 3)
    if case == "abandoned":
        stream.abandon(first)
    second, rows = _read_epoch(dataset, stream, next_epoch)
    assert second is not first
    np.testing.assert_array_equal(rows, _roll(next_epoch))


def test_an_iterator_read_without_counting_is_not_handed_on():
    # A plain keras.Model reads the stream and never calls batches_read.
    dataset, stream, _ = data.epoch_shuffled((X, Y), 2, _roll, steps=3)
    stream(0)
    first = iter(dataset)
    for _ in range(3):
        next(first)
    stream.epoch_ended()
    second, rows = _read_epoch(dataset, stream, 0)
    assert second is not first
    np.testing.assert_array_equal(rows, _roll(0))


def test_an_epoch_begun_and_never_ended_leaves_no_iterator_behind():
    # A fit interrupted inside an epoch by a reader that does not count.
    dataset, stream, _ = data.epoch_shuffled((X, Y), 2, _roll, steps=3)
    stream(0)
    first = iter(dataset)
    next(first)
    second, rows = _read_epoch(dataset, stream, 0)
    assert second is not first
    np.testing.assert_array_equal(rows, _roll(0))


def test_iterators_asked_for_outside_an_epochs_start_are_new_and_leave_the_kept_one():
    # Keras builds an unbuilt model from a first batch before training.
    dataset, stream, _ = data.epoch_shuffled((X, Y), 2, _roll, steps=3)
    kept, _ = _read_epoch(dataset, stream, 0)
    other = iter(dataset)
    next(other)
    assert other is not kept
    again, rows = _read_epoch(dataset, stream, 1)
    assert again is kept
    np.testing.assert_array_equal(rows, _roll(1))


def test_batches_read_from_other_iterators_are_not_counted():
    dataset, stream, _ = data.epoch_shuffled((X, Y), 2, _roll, steps=3)
    kept, _ = _read_epoch(dataset, stream, 0)
    stream.batches_read(iter(dataset), 3)
    stream.abandon(iter(dataset))
    again, _ = _read_epoch(dataset, stream, 1)
    assert again is kept
