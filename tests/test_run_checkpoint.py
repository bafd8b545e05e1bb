"""`robustlab.run_checkpoint.write_history` on histories it must refuse.

(The resume behaviour of `EpochCheckpoint` is tested in tests/test_resume.py.)
"""

import pytest

from robustlab import run_checkpoint


@pytest.mark.parametrize("history", [
    # Sorted keys: the first one ("loss") is the shorter, which used to cut
    # the CSV to one row ...
    {"loss": [1.0], "val_loss": [2.0, 3.0]},
    # ... or a later one, which used to fail after history.json was written.
    {"loss": [1.0, 0.5], "val_loss": [2.0]},
])
def test_write_history_refuses_lists_of_different_lengths(tmp_path, history):
    lengths = {key: len(values) for key, values in sorted(history.items())}
    with pytest.raises(ValueError, match="`history`") as raised:
        run_checkpoint.write_history(history, tmp_path)
    assert str(raised.value).endswith(f"Received: history with lengths {lengths}")


def test_write_history_refusing_a_history_writes_no_file(tmp_path):
    with pytest.raises(ValueError):
        run_checkpoint.write_history({"loss": [1.0, 0.5], "val_loss": [2.0]}, tmp_path)
    assert list(tmp_path.iterdir()) == []
