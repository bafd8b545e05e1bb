"""The GPU profile's trace summary (`benchmarks/profile_gpu_step.py`) counts
what a JAX profiler trace holds: the device's kernels, their kinds, the busy
time as a union of intervals. Checked on traces built here (no GPU needed)."""

import gzip
import json

import pytest

from tests import benchmark_scripts



@pytest.fixture(scope="module")
def profile():
    return benchmark_scripts.load("profile_gpu_step")


def kernel(ts, dur, name, tid=7):
    return {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": name}


def write_trace(path, events):
    meta = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "pid": 1, "tid": 7, "name": "thread_name",
         "args": {"name": "Stream #14(Compute)"}},
        {"ph": "M", "pid": 1, "tid": 8, "name": "thread_name",
         "args": {"name": "XLA Ops"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/host:CPU"}},
    ]
    with gzip.open(path, "wt") as handle:
        json.dump({"traceEvents": meta + events}, handle)


@pytest.mark.parametrize("name, kind", [
    ("loop_convert_fusion_12", "XLA elementwise fusion"),
    ("input_reduce_fusion_7", "XLA reduction fusion"),
    ("input_transpose_fusion", "XLA transpose/copy"),
    ("sm90_xmma_dgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc",
     "conv input-gradient (dgrad)"),
    ("sm90_xmma_wgrad_indexed_implicit_gemm_bf16", "conv weight-gradient (wgrad)"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16", "conv forward (fprop)"),
    ("Memset 3", "copy/memset"),
    ("MemcpyD2D", "copy/memset"),
])
def test_a_kernel_name_reads_as_its_kind(profile, name, kind):
    assert profile.kernel_kind(name) == kind


def test_busy_time_is_the_union_of_the_kernels_intervals(profile):
    kernels = [kernel(0, 10, "a"), kernel(5, 10, "b"), kernel(20, 5, "c"),
               kernel(21, 1, "d")]
    assert profile.busy_microseconds(kernels) == 20


def test_the_summary_counts_device_stream_kernels_a_step(profile, tmp_path):
    path = tmp_path / "perfetto_trace.json.gz"
    write_trace(path, [
        # Two steps, each a convolution and a fusion with a 10 us gap.
        kernel(0, 100, "sm90_xmma_fprop_implicit_gemm"),
        kernel(110, 40, "loop_maximum_fusion"),
        kernel(200, 100, "sm90_xmma_fprop_implicit_gemm"),
        kernel(310, 40, "loop_maximum_fusion"),
        # Not kernels: XLA's op line on the device, and the host.
        kernel(0, 350, "fusion", tid=8),
        {"ph": "X", "pid": 2, "tid": 3, "ts": 0, "dur": 999, "name": "python"},
    ])
    text, summary = profile.summarise_trace(str(path), steps=2)
    assert summary["kernels_per_step"] == 2
    assert summary["span_ms"] == pytest.approx(0.175)
    assert summary["busy_ms"] == pytest.approx(0.140)
    assert summary["by_kind"]["conv forward (fprop)"] == {"ms": 0.1, "count": 1.0}
    assert summary["by_kind"]["XLA elementwise fusion"] == {"ms": 0.04, "count": 1.0}
    assert summary["top"][0]["name"] == "sm90_xmma_fprop_implicit_gemm"
    assert summary["span_ms"] - summary["busy_ms"] == pytest.approx(0.035)
    assert "2 kernels" in text
    assert summary["by_program_ms"] == {"?": pytest.approx(0.14)}


def test_a_trace_without_device_kernels_says_so(profile, tmp_path):
    path = tmp_path / "perfetto_trace.json.gz"
    write_trace(path, [{"ph": "X", "pid": 2, "tid": 3, "ts": 0, "dur": 5, "name": "x"}])
    text, summary = profile.summarise_trace(str(path), steps=1)
    assert summary == {}
    assert "no device kernels found" in text
