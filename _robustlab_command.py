"""The `robustlab` command's entry point, without TensorFlow's start-up lines.

Importing `robustlab` imports Keras and, on the TensorFlow backend,
TensorFlow, which writes about nine lines to standard error as it loads and
first looks for a GPU: an absl preamble, notes on oneDNN and on CPU
instructions, "Could not find cuda drivers", each more than once, and on a
machine without a GPU driver "failed call to cuInit: ... UNKNOWN ERROR
(303)". Most are written before any TensorFlow setting applies
(`TF_CPP_MIN_LOG_LEVEL=3` leaves six of them), so they can only be taken out
of the process's standard error itself. This module therefore lives outside
the `robustlab` package (importing anything inside it would load TensorFlow
first): it imports the command with standard error captured, drops those
lines and passes everything else on, warnings and errors included.

`TF_CPP_MIN_LOG_LEVEL=0` (TensorFlow's setting for all of its messages)
shows them all again, and so does `python -m robustlab.cli`. A library user's
`import robustlab` is never filtered.
"""

import contextlib
import os
import re
import sys
import tempfile

__all__ = [
    "main",
    "standard_error_filtered",
    "start_up_lines_dropped",
]

_ABSL_PREAMBLE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written "
    "to STDERR")
# absl's line: severity, MMDD, time, thread, file:line] message.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \S+\s+\d+ ([\w.+-]+):\d+\] (.*)$")
_NO_CUDA_DRIVER = "Could not find cuda drivers on your machine"
_CPU_NOTE_FILE = "cpu_feature_guard.cc"
_CPU_NOTE_CONTINUED = "To enable the following instructions:"


def start_up_lines_dropped(text):
    """`text`, what was written to standard error while TensorFlow loaded,
    without TensorFlow's start-up lines: absl's preamble, its informational
    (`I`) lines, the second line of the note on CPU instructions, and, when
    TensorFlow said it found no CUDA driver, the failed `cuInit` that
    follows from that. Warnings and errors stay (a failed `cuInit` on a
    machine that has a driver too), and so does every other line.

    Example:

    >>> text = ("I0000 00:00:1.5 7 cudart_stub.cc:31] Could not find cuda "
    ...         "drivers on your machine, GPU will not be used.\\n"
    ...         "E0000 00:00:2.5 7 cuda_platform.cc:52] failed call to cuInit: "
    ...         "UNKNOWN ERROR (303)\\n"
    ...         "W0000 00:00:3.5 7 some_op.cc:9] a real warning\\n")
    >>> print(start_up_lines_dropped(text), end="")
    W0000 00:00:3.5 7 some_op.cc:9] a real warning
    """
    no_driver = _NO_CUDA_DRIVER in text
    kept = []
    after_cpu_note = False
    for line in text.splitlines(keepends=True):
        content = line.rstrip("\r\n")
        match = _ABSL_LINE.match(content)
        severity, source, message = match.groups() if match else (None, None, None)
        dropped = (
            content == _ABSL_PREAMBLE
            or severity == "I"
            or (severity == "E" and no_driver and message.startswith("failed call to cuInit"))
            or (after_cpu_note and content.startswith(_CPU_NOTE_CONTINUED))
        )
        after_cpu_note = source == _CPU_NOTE_FILE
        if not dropped:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def standard_error_filtered(keep):
    """Capture what the process writes to standard error (file descriptor 2,
    so native libraries' writes too) inside the block, and write `keep(text)`
    to it afterwards; everything, unfiltered, if the block raises."""
    _flush_standard_error()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            failed = True
            try:
                yield
                failed = False
            finally:
                _flush_standard_error()
                os.dup2(saved, 2)
                captured.seek(0)
                text = captured.read().decode("utf-8", errors="replace")
                sys.stderr.write(text if failed else keep(text))
                sys.stderr.flush()
    finally:
        os.close(saved)


def _flush_standard_error():
    sys.stderr.flush()
    if sys.__stderr__ is not None and sys.__stderr__ is not sys.stderr:
        sys.__stderr__.flush()


def _look_for_devices():
    """Let TensorFlow look for its devices now, inside the capture: that is
    when it calls `cuInit`. (It leaves the thread settings open: `--threads`
    still applies.)"""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.list_physical_devices()


def _unsupported_backend(error):
    """Whether `error` is robustlab's refusal of the Keras backend
    (`robustlab.backend.check_requested` or `check_supported`, which
    `import robustlab` runs), not an ImportError of anything else."""
    backend = sys.modules.get("robustlab.backend")
    if backend is None:
        return False
    checks = {backend.check_requested.__code__, backend.check_supported.__code__}
    traceback = error.__traceback__
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback.tb_frame.f_code in checks


def main(argv=None):
    """`robustlab.cli.main` (the `robustlab` command), its import without
    TensorFlow's start-up lines.

    A Keras backend robustlab does not support (KERAS_BACKEND=torch, say)
    stops every command, `--help` and `--version` included, with one line,
    `robustlab: error: ...` naming the supported ones, and exit status 2,
    as a bad argument does.

    Ctrl-C while it loads (seconds, before any command starts) stops it
    with one line, `robustlab: interrupted`, and exit status 130, as Ctrl-C
    in a command does; TensorFlow's start-up lines stay dropped."""
    interrupted = False
    try:
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
            try:
                from robustlab import cli
            except KeyboardInterrupt:
                interrupted = True
        else:
            with standard_error_filtered(start_up_lines_dropped):
                # Caught inside the capture, which then ends as usual:
                # filtered (it passes everything on when its block raises).
                try:
                    from robustlab import cli

                    _look_for_devices()
                except KeyboardInterrupt:
                    interrupted = True
    except ImportError as error:
        if not _unsupported_backend(error):
            raise
        print(f"robustlab: error: {error}", file=sys.stderr)
        return 2
    if interrupted:
        print("\nrobustlab: interrupted", file=sys.stderr)
        return 130
    return cli.main(argv)
