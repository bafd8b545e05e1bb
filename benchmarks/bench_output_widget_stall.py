"""How often a headless notebook execution stalls a cell until its time limit
when the cell writes into an `ipywidgets.Output` widget, and why the course's
explorers draw into an `ipywidgets.Image` instead.

    python benchmarks/bench_output_widget_stall.py [--runs 40] [--limit 5]

nbclient (which `nbgrader autograde` and `robustlab.course.execution` use)
imitates a front end for Output widgets: each output that lands in one is
answered with a comm message on the shell channel, sent while nbclient waits
on that socket for the cell's reply. Now and then the reply's arrival then
goes unnoticed until the cell's time limit, and the cell (0.1 s of work)
takes exactly the limit, without any error. Each variant below is a fresh
kernel running three cells; the middle one writes 20 lines:

- `Output widget`: the 20 lines go into an Output widget;
- `Output widget, sliced wait`: the same, with the client waiting for the
  reply in 0.25 s slices (each slice ends with a direct look at the socket;
  `robustlab.course.execution.run_notebook` waits this way); if this
  removes the stall, the lost wake-up is the client's;
- `Image widget`: 20 updates of an Image widget's bytes (what the course's
  explorers do): state only, nothing comes back from the client;
- `plain prints`: the 20 lines printed.

A cell counts as stalled when it took at least the limit. The variants run
in turn, run by run, so that the machine's drift touches them alike.
"""

import argparse
import os
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from robustlab.course.execution import _wait_in_slices  # noqa: E402 (after the path)

SETUP = "import ipywidgets as widgets\nfrom IPython.display import display"
# A valid 1x1 PNG: the Image widget only carries bytes.
PIXEL = ("b'\\x89PNG\\r\\n\\x1a\\n\\x00\\x00\\x00\\rIHDR\\x00\\x00\\x00\\x01\\x00\\x00\\x00"
         "\\x01\\x08\\x06\\x00\\x00\\x00\\x1f\\x15\\xc4\\x89\\x00\\x00\\x00\\rIDATx\\x9cc"
         "\\xf8\\xff\\xff?\\x00\\x05\\xfe\\x02\\xfe\\xa75\\x81\\x84\\x00\\x00\\x00\\x00IEND"
         "\\xaeB`\\x82'")
MIDDLE = {
    "Output widget": ("out = widgets.Output(); display(out)\n"
                      "for i in range(20):\n    with out:\n        print(i)"),
    "Image widget": (f"image = widgets.Image(format='png'); display(image)\n"
                     f"for i in range(20):\n    image.value = {PIXEL} + bytes([i])"),
    "plain prints": "for i in range(20):\n    print(i)",
}


def middle_cell_seconds(path, limit, sliced):
    """Execute the notebook at `path` in a fresh kernel; the middle cell's
    wall time and the names of any errors."""
    notebook = nbformat.read(path, as_version=4)
    seconds = {}

    class Client(NotebookClient):
        async def async_start_new_kernel_client(self):
            client = await super().async_start_new_kernel_client()
            if sliced:
                _wait_in_slices(client.shell_channel)
            return client

        async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
            started = time.perf_counter()
            try:
                return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
            finally:
                seconds[cell_index] = time.perf_counter() - started

    Client(notebook, timeout=limit, allow_errors=True, interrupt_on_timeout=True,
           error_on_timeout={"ename": "CellTimeoutError", "evalue": "", "traceback": []},
           ).execute()
    errors = [o.ename for c in notebook.cells for o in c.get("outputs", [])
              if o.output_type == "error"]
    return seconds[1], errors


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--limit", type=float, default=5.0, help="seconds a cell")
    args = parser.parse_args(argv)
    variants = [("Output widget", "Output widget", False),
                ("Output widget, sliced wait", "Output widget", True),
                ("Image widget", "Image widget", False),
                ("plain prints", "plain prints", False)]
    results = {name: [] for name, _, _ in variants}
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for middle, source in MIDDLE.items():
            notebook = nbformat.v4.new_notebook()
            notebook.cells = [nbformat.v4.new_code_cell(SETUP),
                              nbformat.v4.new_code_cell(source),
                              nbformat.v4.new_code_cell("done = True")]
            paths[middle] = os.path.join(folder, f"{len(paths)}.ipynb")
            nbformat.write(notebook, paths[middle])
        for run in range(args.runs):
            for name, middle, sliced in variants:
                results[name].append(middle_cell_seconds(paths[middle], args.limit, sliced))
            print(f"run {run + 1} of {args.runs}", end="\r", file=sys.stderr, flush=True)
    print(f"{'variant':28s} {'stalled':>9s} {'errors':>7s} {'median cell (s)':>16s} "
          f"{'slowest (s)':>12s}")
    for name, rows in results.items():
        times = sorted(s for s, _ in rows)
        stalled = sum(s >= args.limit for s in times)
        errors = sum(bool(e) for _, e in rows)
        print(f"{name:28s} {stalled:4d} of {len(rows):<3d} {errors:7d} "
              f"{times[len(times) // 2]:16.2f} {times[-1]:12.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
