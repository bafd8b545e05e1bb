"""Where the GPU training step's time goes: a JAX profiler trace of PGD-10
PreAct ResNet-18 steps, summarised by kernel, and the step's time under
other settings.

The step is the one `bench_gpu_training.py` times (same network, policy,
attack and optimiser; its builders are imported from there):

- `--what hand`: the hand-written jitted step, attack unrolled;
- `--what hand_fori`: the same with the attack in a `jax.lax.fori_loop`;
- `--what fit`: `robustlab.AdversarialModel.fit` (one epoch traced after a
  warm-up epoch). `--unroll-attack` makes robustlab's attack loop unrolled
  on any backend for this run (what it does on the CPU).

It prints the step time (median of `--repeats` epochs of `--steps` steps),
XLA's own count of the step's FLOPs and bytes (`cost_analysis`, hand steps
only; on a GPU it leaves out the convolutions, which are cuDNN calls, and
counts a loop's body once) and, unless `--no-trace`, a table of the device's kernels from the
profiler's trace: time a step by kernel and by kind (cuDNN convolutions by
pass, XLA fusions, copies), the device's busy time and its idle gaps. The
trace (`perfetto_trace.json.gz`) is written under `--out` for a closer look;
`--summarise FILE` summarises a trace brought back from the GPU machine.

Run on the GPU machine (JAX with CUDA; Keras as `run_gpu.sh` installs it):
`KERAS_BACKEND=jax python benchmarks/profile_gpu_step.py --what hand --out DIR`.
XLA flags (`XLA_FLAGS`) are read when JAX starts its backend, so a setting
is compared in a process of its own.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", choices=("hand", "hand_fori", "fit"), default="hand")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="the models' L2 weight decay (default cifar10_rice's "
                             "5e-4; 0 leaves out the per-weight regularisers)")
    parser.add_argument("--unroll-attack", action="store_true",
                        help="robustlab's attack loop unrolled (fit only)")
    parser.add_argument("--no-trace", action="store_true")
    parser.add_argument("--label", default=None, help="name of this run in the output")
    parser.add_argument("--out", default=None)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--summarise", default=None,
                        help="summarise this perfetto_trace.json.gz and exit")
    args = parser.parse_args(argv)
    if args.unroll_attack and args.what != "fit":
        parser.error("--unroll-attack applies to --what fit only (the hand-written "
                     f"steps choose by --what). Received: --what {args.what}")
    for name in ("batch", "steps", "repeats", "width", "pgd_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. "
                         f"Received: {getattr(args, name)}")
    return args


# ---------------------------------------------------------------------------
# The trace's device kernels.


def kernel_kind(name):
    """A coarse kind for a GPU kernel's name (cuDNN's and XLA's naming)."""
    low = name.lower()
    if "memcpy" in low or "memset" in low:
        return "copy/memset"
    # XLA's fusions first: "convert" would otherwise read as a convolution.
    if "fusion" in low or low.startswith(("loop_", "input_", "wrapped_")):
        if "reduce" in low:
            return "XLA reduction fusion"
        if "transpose" in low or "copy" in low:
            return "XLA transpose/copy"
        return "XLA elementwise fusion"
    if "dgrad" in low:
        return "conv input-gradient (dgrad)"
    if "wgrad" in low:
        return "conv weight-gradient (wgrad)"
    if "fprop" in low:
        return "conv forward (fprop)"
    if "gemm" in low or "cutlass" in low or "cublas" in low or "xmma" in low:
        return "other cuDNN/cuBLAS kernel"
    return "other"


def device_kernel_events(events):
    """The kernel (and copy) events of the trace's GPU processes."""
    process = {}
    thread = {}
    for e in events:
        if e.get("ph") != "M":
            continue
        if e.get("name") == "process_name":
            process[e["pid"]] = e.get("args", {}).get("name", "")
        elif e.get("name") == "thread_name":
            thread[(e["pid"], e.get("tid"))] = e.get("args", {}).get("name", "")
    gpu_pids = {pid for pid, name in process.items()
                if "gpu" in name.lower() and "host" not in name.lower()}
    streams = {key for key, name in thread.items()
               if key[0] in gpu_pids and "stream" in name.lower()}
    kernels = [e for e in events if e.get("ph") == "X" and "dur" in e
               and (e["pid"], e.get("tid")) in streams]
    if not kernels:
        # No thread named a stream: every device line except XLA's own
        # module and op lines.
        skip = ("xla modules", "xla ops", "steps", "launch stats", "source")
        kernels = [e for e in events if e.get("ph") == "X" and "dur" in e
                   and e["pid"] in gpu_pids
                   and not any(s in thread.get((e["pid"], e.get("tid")), "").lower()
                               for s in skip)]
    names = {"processes": sorted(set(process.values())),
             "device threads": sorted({thread[k] for k in thread if k[0] in gpu_pids})}
    return kernels, names


def busy_microseconds(kernels):
    """Length of the union of the kernels' intervals."""
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in kernels)
    busy, current_start, current_end = 0.0, None, None
    for start, end in spans:
        if current_end is None or start > current_end:
            if current_end is not None:
                busy += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        busy += current_end - current_start
    return busy


def summarise_trace(path, steps, top=25):
    with gzip.open(path, "rt") as handle:
        data = json.load(handle)
    events = data["traceEvents"] if isinstance(data, dict) else data
    kernels, names = device_kernel_events(events)
    lines = [f"trace {path}", f"processes: {names['processes']}",
             f"device threads: {names['device threads']}"]
    if not kernels:
        lines.append("no device kernels found in the trace")
        return "\n".join(lines), {}
    start = min(e["ts"] for e in kernels)
    end = max(e["ts"] + e["dur"] for e in kernels)
    span_ms = (end - start) / 1000 / steps
    busy_ms = busy_microseconds(kernels) / 1000 / steps
    summed_ms = sum(e["dur"] for e in kernels) / 1000 / steps
    lines.append(
        f"a step ({steps} traced): span of device work {span_ms:.2f} ms, busy "
        f"{busy_ms:.2f} ms ({100 * busy_ms / span_ms:.1f}%), kernels' summed time "
        f"{summed_ms:.2f} ms, {len(kernels) / steps:.0f} kernels, idle "
        f"{span_ms - busy_ms:.2f} ms")
    by_kind = collections.defaultdict(lambda: [0.0, 0])
    by_name = collections.defaultdict(lambda: [0.0, 0])
    for e in kernels:
        for table, key in ((by_kind, kernel_kind(e["name"])), (by_name, e["name"])):
            table[key][0] += e["dur"]
            table[key][1] += 1
    summary = {"span_ms": span_ms, "busy_ms": busy_ms, "summed_ms": summed_ms,
               "kernels_per_step": len(kernels) / steps, "by_kind": {}, "top": []}
    # Every kernel of the traced epoch counts, the step's and those of the
    # small programs around it (the batch's slice, a key split): by program.
    by_module = collections.Counter()
    for e in kernels:
        by_module[e.get("args", {}).get("hlo_module", "?")] += e["dur"]
    summary["by_program_ms"] = {m: d / 1000 / steps for m, d in by_module.items()}
    lines.append("by program, ms a step: " + ", ".join(
        f"{m} {d / 1000 / steps:.3f}" for m, d in by_module.most_common(6)))
    lines.append(f"{'kind':34s} {'ms/step':>8s} {'share':>6s} {'kernels/step':>12s}")
    for kind, (dur, count) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
        ms = dur / 1000 / steps
        summary["by_kind"][kind] = {"ms": ms, "count": count / steps}
        lines.append(f"{kind:34s} {ms:8.2f} {100 * ms / summed_ms:5.1f}% "
                     f"{count / steps:12.1f}")
    lines.append(f"top {top} kernels by time:")
    for name, (dur, count) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
        ms = dur / 1000 / steps
        summary["top"].append({"name": name, "ms": ms, "count": count / steps})
        lines.append(f"  {ms:7.3f} ms {count / steps:6.1f}x  mean "
                     f"{1000 * ms / max(count / steps, 1e-9):7.1f} us  {name[:110]}")
    # Short kernels: where launch gaps, not arithmetic, may set the pace.
    durations = sorted(e["dur"] for e in kernels)
    short = [d for d in durations if d < 10]
    lines.append(f"kernels under 10 us: {len(short) / steps:.0f} a step, "
                 f"{sum(short) / 1000 / steps:.2f} ms; median kernel "
                 f"{durations[len(durations) // 2]:.1f} us")
    return "\n".join(lines), summary


def newest_trace(folder):
    found = sorted(glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"),
                             recursive=True), key=os.path.getmtime)
    return found[-1] if found else None


# ---------------------------------------------------------------------------
# The measured steps.


def settings(args):
    import bench_gpu_training as bench

    cfg = bench.run_settings(bench.parse_args([]))
    cfg.update(steps=args.steps, repeats=args.repeats, width=args.width,
               pgd_steps=args.pgd_steps)
    if args.weight_decay is not None:
        cfg["weight_decay"] = args.weight_decay
    return cfg


def unroll_robustlab_attack():
    """robustlab's attack loop unrolled on every backend (for this run).
    Returns a list that counts the calls of the replacement: the attack
    reaches `repeat` through the backend package (`robustlab.backend.jax`),
    so both names are replaced, and the count shows that the replacement
    was used (the first profile on an H100 replaced only the module's name,
    so its "unrolled" rows ran the rolled loop)."""
    import robustlab.backend.jax as backend_package
    from robustlab.backend.jax import autodiff

    calls = []

    def repeat(steps, body, initial):
        calls.append(steps)
        value = initial
        for i in range(steps):
            value = body(i, value)
        return value

    autodiff.repeat = repeat
    backend_package.repeat = repeat
    return calls


def hand_run(args, cfg, trace_dir):
    import jax

    import bench_gpu_training as bench
    import robustlab

    step, state, xs, ys = bench.hand_jax_setup(robustlab, cfg, args.batch,
                                               unroll=args.what == "hand")
    # Compiled ahead, and the compiled program is what is timed: one
    # compilation gives both the timings and XLA's cost analysis.
    step = step.lower(state, xs[0], ys[0], jax.random.PRNGKey(0)).compile()
    try:
        analysis = step.cost_analysis()
        if isinstance(analysis, (list, tuple)):
            analysis = analysis[0]
        cost = {k: float(v) for k, v in analysis.items()
                if k in ("flops", "bytes accessed", "transcendentals")}
    except Exception as error:  # cost analysis is informative only
        cost = {"error": repr(error)}
    epoch = bench.hand_epoch_timer(step, state, xs, ys)
    warmup = epoch()
    times = [epoch() for _ in range(cfg["repeats"])]
    if trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            epoch()
    return warmup, times, cost


def fit_run(args, cfg, trace_dir):
    import jax
    import keras

    import bench_gpu_training as bench
    import robustlab

    unrolled_calls = unroll_robustlab_attack() if args.unroll_attack else None
    batch = args.batch
    x, y = bench.synthetic_images(batch * cfg["steps"])
    model = robustlab.AdversarialModel(bench.build_keras_net(robustlab, cfg),
                                       attack=bench.pgd_attack(robustlab, cfg))
    model.compile(
        optimizer=keras.optimizers.SGD(cfg["learning_rate"], momentum=cfg["momentum"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"], jit_compile=True)
    traced_epoch = 1 + cfg["repeats"] if trace_dir else None

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == traced_epoch:
                jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            jax.block_until_ready([v.value for v in self.model.trainable_variables])
            self.seconds.append(time.perf_counter() - self._start)
            if epoch == traced_epoch:
                jax.profiler.stop_trace()

    clock = Clock()
    epochs = 1 + cfg["repeats"] + (1 if trace_dir else 0)
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[clock])
    if unrolled_calls is not None and not unrolled_calls:
        raise RuntimeError("--unroll-attack: robustlab's attack never called the "
                           "unrolled loop; the run would time the rolled one")
    facts = {} if unrolled_calls is None else {"unrolled_traces": len(unrolled_calls)}
    return clock.seconds[0], clock.seconds[1:1 + cfg["repeats"]], facts


def main(argv=None):
    args = parse_args(argv)
    if args.summarise:
        text, _ = summarise_trace(args.summarise, args.steps, args.top)
        print(text)
        return 0
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import keras

    import bench_gpu_training as bench

    keras.mixed_precision.set_global_policy(bench.POLICY)
    cfg = settings(args)
    label = args.label or " ".join(
        [args.what, f"b{args.batch}"] + (["unrolled"] if args.unroll_attack else [])
        + ([f"wd{args.weight_decay:g}"] if args.weight_decay is not None else []))
    trace_dir = None
    if not args.no_trace and args.out:
        trace_dir = os.path.join(args.out, "trace_" + label.replace(" ", "_"))
    run = fit_run if args.what == "fit" else hand_run
    warmup, times, facts = run(args, cfg, trace_dir)
    cost = {} if args.what == "fit" else facts
    median = statistics.median(times)
    record = {
        "label": label, "what": args.what, "batch": args.batch,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "device": jax.devices()[0].device_kind,
        "versions": f"keras {keras.__version__}, jax {jax.__version__}",
        "step_ms": 1000 * median / cfg["steps"],
        "images_per_s": args.batch * cfg["steps"] / median,
        "spread_pct": 100 * (max(times) - min(times)) / median,
        "compile_s": max(warmup - median, 0.0),
        "repeats_s": times, "cost_analysis": cost,
        **({"unrolled_traces": facts.get("unrolled_traces")} if args.unroll_attack else {}),
    }
    if cost.get("flops"):
        record["xla_gflops_per_image"] = cost["flops"] / args.batch / 1e9
        record["xla_gbytes_per_step"] = cost.get("bytes accessed", 0.0) / 1e9
    print(f"RESULT {label}: {record['images_per_s']:.0f} images/s, "
          f"{record['step_ms']:.2f} ms/step (spread {record['spread_pct']:.1f}%), "
          f"compile {record['compile_s']:.1f} s, XLA_FLAGS={record['xla_flags']!r}, "
          f"cost {cost}", flush=True)
    if trace_dir:
        path = newest_trace(trace_dir)
        if path:
            text, summary = summarise_trace(path, cfg["steps"], args.top)
            record["trace_summary"] = summary
            print(text, flush=True)
            # Files come back from the GPU machine only two folders down.
            kept = os.path.join(args.out, f"trace_{label.replace(' ', '_')}.json.gz")
            shutil.copyfile(path, kept)
        shutil.rmtree(trace_dir, ignore_errors=True)
    if args.out:
        with open(os.path.join(args.out, "profile_runs.jsonl"), "a") as handle:
            handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
