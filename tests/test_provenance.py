"""Which code produced a result (the digest of robustlab's sources) and on
what hardware."""

import importlib
import os

import keras
import numpy as np
import pytest

from robustlab import backend
from robustlab import provenance
from robustlab._version import __version__


@pytest.fixture
def package(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "sub" / "b.py").write_text("y = 2\n")
    return root


def test_the_digest_is_16_hex_digits_and_the_same_for_the_same_sources(package):
    digest = provenance.source_digest(str(package))
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert provenance.source_digest(str(package)) == digest


@pytest.mark.parametrize("change", ["edit", "new file", "rename"])
def test_any_change_to_a_source_changes_the_digest(package, change):
    before = provenance.source_digest(str(package))
    if change == "edit":
        (package / "sub" / "b.py").write_text("y = 3\n")
    elif change == "new file":
        (package / "c.py").write_text("")
    else:
        (package / "a.py").rename(package / "z.py")
    assert provenance.source_digest(str(package)) != before


def test_the_course_bytecode_and_other_files_are_left_out(package):
    before = provenance.source_digest(str(package))
    (package / "course").mkdir()
    (package / "course" / "lesson.py").write_text("z = 0\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "a.cpython-311.py").write_text("")
    (package / "notes.txt").write_text("text")
    assert provenance.source_digest(str(package)) == before


def test_line_endings_python_reads_the_same_give_the_same_digest(package):
    # git's autocrlf checks the same commit out with CRLF on Windows.
    before = provenance.source_digest(str(package))
    (package / "a.py").write_bytes(b"x = 1\r\n")
    (package / "sub" / "b.py").write_bytes(b"y = 2\r")
    assert provenance.source_digest(str(package)) == before


def test_hidden_files_and_folders_are_left_out(package):
    # An Emacs lock file (a dangling link) broke `import robustlab`;
    # JupyterLab's checkpoint copies changed the digest of the same code.
    before = provenance.source_digest(str(package))
    (package / ".ipynb_checkpoints").mkdir()
    (package / ".ipynb_checkpoints" / "a-checkpoint.py").write_text("x = 2\n")
    os.symlink(package / "nowhere", package / ".#a.py")
    assert provenance.source_digest(str(package)) == before


def test_the_backend_is_named_with_its_modules_versions():
    # Not a distribution's metadata, which tensorflow-cpu or tf-nightly
    # would not give as "tensorflow"; on JAX both jax and jaxlib.
    backend = keras.backend.backend()
    expected = f"{backend} {importlib.import_module(backend).__version__}"
    if backend == "jax":
        expected += f", jaxlib {importlib.import_module('jaxlib').__version__}"
    assert provenance.code_identity()["backend"] == expected


def test_the_identity_names_robustlab_its_sources_keras_the_backend_and_numpy():
    identity = provenance.code_identity()
    assert identity["robustlab"] == __version__
    assert identity["robustlab_sources"] == provenance.source_digest()
    assert identity["keras"] == keras.__version__
    assert identity["backend"].startswith(keras.backend.backend() + " ")
    # NumPy draws the epochs' order; its streams are promised within a version only.
    assert identity["numpy"] == np.__version__


# Two cores of a 2-core x86 machine, shortened: the fields cpu_kind reads,
# and flags that do not choose kernels (fpu, smep, ...) around those that do.
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 smep sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 smep sha_ni
"""


def test_the_cpu_kind_names_the_model_and_the_extensions_kernels_choose_by():
    assert provenance.cpu_kind(ZEN3) == (
        "AMD EPYC (AuthenticAMD family 25 model 1; avx avx2 f16c fma sse4_1 sse4_2)")


def test_a_cpu_of_the_same_name_with_avx512_is_another_kind():
    # Measured: such a pair of machines, both "AMD EPYC", trained other runs.
    zen4 = ZEN3.replace("model\t\t: 1", "model\t\t: 17").replace(
        "avx2 ", "avx2 avx512f avx512_bf16 ")
    assert provenance.cpu_kind(zen4) == (
        "AMD EPYC (AuthenticAMD family 25 model 17; "
        "avx avx2 avx512_bf16 avx512f f16c fma sse4_1 sse4_2)")


def test_an_arm_cpu_is_named_by_its_part_and_features():
    graviton = ("processor\t: 0\nBogoMIPS\t: 243.75\n"
                "Features\t: fp asimd evtstrm aes sve asimdhp bf16 i8mm cpuid\n"
                "CPU implementer\t: 0x41\nCPU part\t: 0xd40\n")
    assert provenance.cpu_kind(graviton) == "0xd40 (0x41; asimd asimdhp bf16 i8mm sve)"


@pytest.fixture
def no_kernel_settings(monkeypatch):
    # tests/distributed_fit.py sets XLA_FLAGS in the process that imports it.
    for name in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)


def test_without_an_accelerator_the_hardware_is_this_cpus_kind(monkeypatch,
                                                               no_kernel_settings):
    monkeypatch.setattr(backend.get(), "accelerator", lambda: None)
    assert provenance.hardware() == "cpu: " + provenance.cpu_kind()


def test_with_an_accelerator_the_hardware_is_the_accelerator(monkeypatch,
                                                             no_kernel_settings):
    # A GPU run's numbers do not depend on the host's CPU: resumed on another
    # host with the same GPU, it is the same run.
    monkeypatch.setattr(backend.get(), "accelerator", lambda: "gpu: NVIDIA H200")
    assert provenance.hardware() == "gpu: NVIDIA H200"


def test_onednns_older_name_for_its_instruction_sets_is_part_of_the_hardware(
        monkeypatch, no_kernel_settings):
    # DNNL_MAX_CPU_ISA=AVX2 gave the numbers of ONEDNN_MAX_CPU_ISA=AVX2 under
    # the plain run's hardware: a resume across it mixed two trajectories.
    plain = provenance.hardware()
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert provenance.hardware() == f"{plain} [DNNL_MAX_CPU_ISA=AVX2]"


def test_a_cpu_run_records_its_cpu_thread_count(monkeypatch):
    monkeypatch.setattr(backend.get(), "accelerator", lambda: None)
    assert provenance.run_cpu_threads() == provenance.cpu_threads()


def test_an_accelerator_run_records_no_cpu_thread_count(monkeypatch):
    # The accelerator computes the model's sums, so a GPU run resumes on a
    # host with another number of cores.
    monkeypatch.setattr(backend.get(), "accelerator", lambda: "gpu: NVIDIA H200")
    assert provenance.run_cpu_threads() is None


def test_settings_that_choose_other_kernels_are_part_of_the_hardware(monkeypatch,
                                                                      no_kernel_settings):
    # TF_ENABLE_ONEDNN_OPTS=0 gave another trajectory with the same code,
    # machine and threads: a run must not be resumed across it.
    plain = provenance.hardware()
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_thunk_runtime=false")
    assert provenance.hardware() == (
        f"{plain} [TF_ENABLE_ONEDNN_OPTS=0 XLA_FLAGS=--xla_cpu_use_thunk_runtime=false]")


def test_the_digest_of_a_folder_that_is_not_there_is_refused(tmp_path):
    # os.walk of a missing folder yields nothing: it gave the digest of no code.
    with pytest.raises(ValueError, match=r"`package_dir` must be a folder\. Received: "):
        provenance.source_digest(str(tmp_path / "missing"))
