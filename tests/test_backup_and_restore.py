"""robustlab's stateful callbacks resume with `keras.callbacks.BackupAndRestore`
after a SIGKILL of the process, as their docstrings claim.

tests/backup_and_restore_fit.py fits a seeded AdversarialModel (with AWP
and an LR drop) with BackupAndRestore and every stateful callback: a
HessianProbe and a BoundTracker keeping their state in the backup
directory, a PosteriorTracker given the schedule, a RobustEvaluation, and
the guards `fit` adds. The test kills it at several moments, runs it again
until it finishes, and compares with an uninterrupted fit in this process:
every logged number and every variable must be identical.
"""

import os
import signal
import subprocess
import sys

import numpy as np

from tests import backup_and_restore_fit as script
from tests.test_resume import kills_processes
from tests.test_resume import read_json
from tests.test_resume import same

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(out, *args):
    """Start the script; its stderr goes to OUT.log (a pipe nobody reads
    could fill up and stall it)."""
    # The script imports robustlab from this checkout, not an installed copy.
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    with open(out + ".log", "ab") as log:
        return subprocess.Popen([sys.executable, script.__file__, out, *args],
                                env=dict(os.environ, PYTHONPATH=path),
                                stdout=subprocess.DEVNULL, stderr=log)


def log_tail(out):
    with open(out + ".log", "rb") as f:
        return f.read().decode(errors="replace")[-2000:]


def progress(out):
    """(epoch, batch) of the last finished training step, (-1, -1) before."""
    try:
        return tuple(read_json(out, "progress.json"))
    except (OSError, ValueError):
        return (-1, -1)


def resume_epoch(out):
    """The epoch at which BackupAndRestore resumes the fit (its metadata)."""
    try:
        return read_json(out, "backup", "training_metadata.json")["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@kills_processes
def test_a_fit_killed_three_times_resumes_to_the_uninterrupted_history(tmp_path):
    uninterrupted = str(tmp_path / "uninterrupted")
    os.makedirs(uninterrupted)
    script.main(uninterrupted)
    out = str(tmp_path / "killed")
    os.makedirs(out)
    # In the middle of epoch 2, within the PosteriorTracker's window. The
    # script kills itself there: killed from here when the progress file
    # says so, it could be past the epoch's end and inside Keras's in-place
    # backup write on a loaded machine, which no fit can resume from.
    killed = start(out, "--kill-after-batch", "2", "1")
    assert killed.wait() == -signal.SIGKILL, log_tail(out)
    assert progress(out) == (2, 1)
    assert resume_epoch(out) == 2
    # Then twice at the end of a probed epoch (1, 3, 5), between the
    # instruments' writes and the backup of that epoch: the probe's state
    # file is one epoch ahead of the backup, and the second time the probe
    # has already written it once after resuming.
    probed = resume_epoch(out) | 1
    assert 2 <= probed < script.EPOCHS
    for _ in range(2):
        killed = start(out, "--kill-before-backup", str(probed))
        assert killed.wait() == -signal.SIGKILL, log_tail(out)
        assert resume_epoch(out) == probed
        assert progress(out) == (probed, script.N_TRAIN // script.BATCH - 1)
    done = start(out)
    assert done.wait() == 0, log_tail(out)
    history, expected = (read_json(folder, "history.json")
                         for folder in (out, uninterrupted))
    assert history.keys() == expected.keys()
    assert {"hessian_top_eig", "posterior_var_top_predicted", "pac_bayes_kl",
            "train_robust_accuracy", "awp_gamma"} <= history.keys()
    for key in expected:
        assert same(history[key], expected[key]), key
    with np.load(os.path.join(out, "weights.npz")) as weights, \
            np.load(os.path.join(uninterrupted, "weights.npz")) as expected_weights:
        assert weights.files == expected_weights.files
        for name in expected_weights.files:
            np.testing.assert_array_equal(weights[name], expected_weights[name])
    assert not os.path.exists(os.path.join(out, "backup"))
