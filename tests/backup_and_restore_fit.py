"""A seeded adversarial fit with `keras.callbacks.BackupAndRestore` and every
stateful robustlab callback, resumable after a SIGKILL; run as a subprocess
by tests/test_backup_and_restore.py, which kills it and runs it again.

    python tests/backup_and_restore_fit.py OUT [--kill-before-backup EPOCH]
                                               [--kill-after-batch EPOCH BATCH]

OUT/backup is the BackupAndRestore directory and the instruments'
`state_dir`, as their docstrings recommend. While it trains the script
writes OUT/progress.json (the epoch and batch just finished, for a kill in
the middle of an epoch) and OUT/epochs.json (each finished epoch's logs,
written just before BackupAndRestore saves that epoch: a resumed attempt
writes the epochs it runs again anew). When the fit ends it writes
OUT/history.json, the logs of every epoch, and OUT/weights.npz, the model's
and the optimizer's variables.

`--kill-before-backup EPOCH` SIGKILLs the process at the end of EPOCH after
every instrument has written its state and logs, just before
BackupAndRestore saves the epoch: the moment where an instrument's files
are one epoch ahead of the backup. `--kill-after-batch EPOCH BATCH`
SIGKILLs it when that training step has finished (and progress.json says
so): in the middle of an epoch, and never while BackupAndRestore writes its
files, which Keras does in place (a kill during that write leaves a
truncated weights file that the next fit cannot open).
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import robustlab  # noqa: E402
from robustlab.callbacks import BoundTracker  # noqa: E402
from robustlab.callbacks import HessianProbe  # noqa: E402
from robustlab.callbacks import PosteriorTracker  # noqa: E402
from robustlab.callbacks import RobustEvaluation  # noqa: E402

# Six epochs of three steps; the probe runs at the end of epochs 1, 3 and 5,
# so that every window from epoch 2 on starts from a restored direction, and
# the learning rate drops at epoch 3.
EPOCHS, BATCH, N_TRAIN, PROBE_EVERY = 6, 64, 192, 2
SCHEDULE = robustlab.schedules.PiecewiseConstant(0.1, drop_epochs=(3,))
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def write_json(path, payload):
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f)
    os.replace(path + ".tmp", path)


def read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


class Progress(keras.callbacks.Callback):
    """Writes the epoch and batch just finished."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        write_json(self.path, [self.epoch, batch])


class EpochLogs(keras.callbacks.Callback):
    """Keeps each finished epoch's logs in a file; the History of a resumed
    fit holds only the epochs after the resume."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        epochs = read_json(self.path, {})
        epochs[str(epoch)] = {k: float(v) for k, v in logs.items()}
        write_json(self.path, epochs)


class KillBeforeBackup(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class KillAfterBatch(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def build_model():
    net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=0,
                                     weight_decay=5e-4)
    model = robustlab.AdversarialModel(
        net, attack=robustlab.PGD(0.1, steps=2),
        eval_attack=robustlab.PGD(0.1, step_size=0.04, steps=3),
        awp=robustlab.AWP(gamma=0.005, warmup_epochs=1), seed=0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS, metrics=["accuracy"])
    return model


def instruments(x, y, state_dir):
    probe = HessianProbe(x[:64], y[:64], every=PROBE_EVERY, clean=True, iterations=5,
                         trace_probes=2, batch_size=64, state_dir=state_dir)
    tracker = PosteriorTracker(probe, batch_size=BATCH, train_size=N_TRAIN,
                               schedule=SCHEDULE, per_layer=True)
    bound = BoundTracker(N_TRAIN, prior_variance=1e-2, tracker=tracker,
                         state_dir=state_dir)
    return [probe, tracker, RobustEvaluation(x[:64], y[:64], batch_size=64), bound]


def main(out, kill_before_backup=None, kill_after_batch=None):
    data = robustlab.data.load("digits", train_size=N_TRAIN, seed=0)
    x, y = data.x_train, data.y_train
    backup = os.path.join(out, "backup")
    model = build_model()
    kill = [] if kill_before_backup is None else [KillBeforeBackup(kill_before_backup)]
    if kill_after_batch is not None:
        kill.append(KillAfterBatch(*kill_after_batch))
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, callbacks=[
        SCHEDULE.callback(), *instruments(x, y, backup),
        Progress(os.path.join(out, "progress.json")),
        EpochLogs(os.path.join(out, "epochs.json")), *kill,
        keras.callbacks.BackupAndRestore(backup)])
    epochs = read_json(os.path.join(out, "epochs.json"), {})
    logs = [epochs[str(epoch)] for epoch in range(EPOCHS)]
    write_json(os.path.join(out, "history.json"),
               {key: [epoch[key] for epoch in logs] for key in logs[0]})
    np.savez(os.path.join(out, "weights.npz"),
             *[keras.ops.convert_to_numpy(v) for v in
               model.variables + model.optimizer.variables])


if __name__ == "__main__":
    arguments = sys.argv[1:]
    kill_at = None
    if "--kill-before-backup" in arguments:
        index = arguments.index("--kill-before-backup")
        kill_at = int(arguments.pop(index + 1))
        arguments.pop(index)
    kill_after = None
    if "--kill-after-batch" in arguments:
        index = arguments.index("--kill-after-batch")
        kill_after = (int(arguments[index + 1]), int(arguments[index + 2]))
        del arguments[index:index + 3]
    main(arguments[0], kill_at, kill_after)
