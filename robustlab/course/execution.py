"""Run a course notebook top to bottom and measure what a lesson costs: the
wall time and the peak memory of its kernel (the budget of a Binder launch).

Needs the `course` extra (nbclient comes with nbgrader and JupyterLab).

Example (not run here: it starts a kernel)::

    from robustlab.course.execution import run_notebook
    result = run_notebook("solutions/00_pgd/00_pgd.ipynb")
    print(result.seconds, result.peak_memory_bytes / 2**30, result.errors)
"""

import dataclasses
import os
import time
from queue import Empty

import nbformat

from robustlab import validation

__all__ = ["NotebookRun", "run_notebook"]

_PEAK_MARKER = "ROBUSTLAB_PEAK_RSS_BYTES="

# Appended to a copy of the notebook: the kernel reports its own peak resident
# memory, after every other cell ran. On Linux that is VmHWM, the high-water
# mark of the kernel's own address space: getrusage's ru_maxrss would also
# count the memory of the process that started the kernel (Linux carries the
# parent's high-water mark across the fork and exec), 0.8 GiB under a caller
# that has imported TensorFlow whatever the lesson uses. The value is the
# cell's result, not printed, so a notebook that redirected sys.stdout still
# reports it.
_PEAK_CELL = f"""\
def _robustlab_peak_rss_bytes():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource, sys
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes there, kB elsewhere
"{_PEAK_MARKER}" + str(_robustlab_peak_rss_bytes())"""


@dataclasses.dataclass
class NotebookRun:
    """What `run_notebook` measured.

    Attributes:
        notebook: the executed notebook (outputs included).
        seconds: wall time from the first cell to the last, kernel start
            included.
        peak_memory_bytes: the kernel's own peak resident memory (on Linux
            its VmHWM; elsewhere getrusage's ru_maxrss, which can include the
            memory of the process that started the kernel).
        errors: `(cell index, error name, message)` of every cell that raised.
    """

    notebook: object
    seconds: float
    peak_memory_bytes: int
    errors: list


# How long one wait for a cell's reply may last before the client looks at
# the socket directly.
_REPLY_WAIT_SLICE = 0.25


def _wait_in_slices(channel, slice_seconds=_REPLY_WAIT_SLICE):
    """Make `channel.get_msg(timeout)` (an async jupyter_client channel) wait
    in slices of at most `slice_seconds`, up to `timeout` in all.

    nbclient imitates a front end for `ipywidgets.Output` and answers every
    output that lands in one with a comm message on the shell channel, sent
    while it waits on that socket for the cell's reply; the reply's wake-up
    can then be lost, and the reply is found only when the wait times out
    (a 0.1 s cell took its whole limit; benchmarks/README.md, "Why an
    autograde sometimes took a minute longer"). Every slice ends with a
    direct look at the socket, so a lost wake-up costs at most one slice.
    """
    get_msg = channel.get_msg

    async def get_msg_in_slices(timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            wait = slice_seconds if remaining is None else max(
                0.0, min(slice_seconds, remaining))
            try:
                return await get_msg(timeout=wait)
            except Empty:
                if remaining is not None and remaining <= slice_seconds:
                    raise

    channel.get_msg = get_msg_in_slices


def _notebook_client_class():
    from nbclient import NotebookClient

    class SlicedWaitClient(NotebookClient):
        async def async_start_new_kernel_client(self):
            client = await super().async_start_new_kernel_client()
            _wait_in_slices(client.shell_channel)
            return client

    return SlicedWaitClient


def run_notebook(path, *, timeout=600, kernel_name="python3", env=None, cwd=None):
    """Execute the notebook at `path` in a fresh kernel, going on after
    errors, and measure it.

    Args:
        path: the .ipynb file (left unchanged).
        timeout: seconds allowed for each cell, an integer >= 1, or None
            for no limit. A cell that runs longer stops the run with nbclient's
            `CellTimeoutError` (it is not one of the run's `errors`).
        kernel_name: the Jupyter kernel.
        env: environment variables set in the kernel (on top of this
            process's), e.g. `{"NBGRADER_EXECUTION": "autograde"}`.
        cwd: the kernel's working folder (default: the notebook's).

    Returns:
        A `NotebookRun`.

    Each cell's reply is awaited in slices of 0.25 s: nbclient, which runs
    the notebook, can otherwise miss the reply of a cell that writes into an
    `ipywidgets.Output` widget until `timeout` runs out.
    """
    if timeout is not None:
        # nbclient reads 0 and negative numbers as no limit at all, and
        # refused a float (whole seconds only) with a traitlets TraitError.
        timeout = validation.check_int_at_least("timeout", timeout, 1)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(_PEAK_CELL))
    client = _notebook_client_class()(
        notebook, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
        resources={"metadata": {"path": cwd or os.path.dirname(os.path.abspath(path))}},
    )
    started = time.perf_counter()
    client.execute(env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    peak_cell = notebook.cells.pop()
    peak = None
    for output in peak_cell.get("outputs", []):
        if output.get("output_type") == "execute_result":
            text = output.get("data", {}).get("text/plain", "").strip("'\"")
            if text.startswith(_PEAK_MARKER):
                peak = int(text[len(_PEAK_MARKER):])
    if peak is None:
        # A budget check must not pass on a 0 that was never measured.
        raise RuntimeError(
            "The kernel did not report its peak memory: the cell that reads it "
            f"after the notebook's own cells gave {peak_cell.get('outputs', [])!r}")
    errors = [
        (index, output.ename, output.evalue)
        for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
        for output in cell.get("outputs", []) if output.output_type == "error"
    ]
    return NotebookRun(notebook, seconds, peak, errors)
