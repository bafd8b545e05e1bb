"""The `robustlab` command's entry point: TensorFlow's start-up lines are
dropped from its standard error, and nothing else is."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

import _robustlab_command
from _robustlab_command import standard_error_filtered, start_up_lines_dropped

# What TensorFlow 2.21 wrote while `robustlab` was imported and TensorFlow
# looked for its devices, on a 2-core CPU machine without a GPU driver.
START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796505386.900236   31922 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796505386.900790   31922 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796505386.967675   31922 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796505389.680285   31922 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796505389.681464   31922 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
E0000 00:00:1796505391.068790   31922 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""
CUINIT = START_UP.splitlines(keepends=True)[-1]
WARNING = "W0000 00:00:1796505391.5   31922 op_kernel.cc:1857] OP_REQUIRES failed: a real warning\n"
PYTHON_WARNING = "/x/y.py:3: UserWarning: something the user should see\n  warnings.warn(w)\n"


def test_tensorflows_start_up_lines_are_all_dropped():
    assert start_up_lines_dropped(START_UP) == ""


def test_warnings_errors_and_other_text_are_kept_in_order():
    lines = START_UP.splitlines(keepends=True)
    text = "".join(lines[:3]) + WARNING + "".join(lines[3:]) + PYTHON_WARNING
    assert start_up_lines_dropped(text) == WARNING + PYTHON_WARNING


def test_a_failed_cuinit_is_kept_where_tensorflow_did_not_say_it_found_no_driver():
    # With a driver installed, a failing cuInit is a real problem.
    assert start_up_lines_dropped(CUINIT) == CUINIT


def test_only_the_note_on_cpu_instructions_loses_its_second_line():
    line = "To enable the following instructions: printed by someone else\n"
    assert start_up_lines_dropped(line) == line
    assert start_up_lines_dropped(WARNING + line) == WARNING + line


def test_writes_to_the_file_descriptor_are_captured_and_filtered(capfd):
    with standard_error_filtered(str.upper):
        os.write(2, b"from native code\n")
        print("from python", file=sys.__stderr__)  # capfd replaced sys.stderr
    assert capfd.readouterr().err == "FROM NATIVE CODE\nFROM PYTHON\n"


def test_everything_is_passed_on_unfiltered_when_the_block_raises(capfd):
    with pytest.raises(ImportError, match="no such backend"):
        with standard_error_filtered(lambda text: ""):
            os.write(2, START_UP.encode())
            raise ImportError("no such backend")
    assert capfd.readouterr().err == START_UP
    # Standard error is back where it was.
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_the_installed_command_is_this_entry_point():
    (entry,) = [e for e in importlib.metadata.entry_points(group="console_scripts")
                if e.name == "robustlab"]
    assert entry.load() is _robustlab_command.main


def _command(*args, **env):
    return _python("import sys, _robustlab_command; "
                   "sys.exit(_robustlab_command.main(sys.argv[1:]))", *args, **env)


def _python(code, *args, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update({"KERAS_BACKEND": "tensorflow", **env})
    return subprocess.run([sys.executable, "-c", code, *args],
                          capture_output=True, text=True, env=environment, timeout=300)


def test_the_command_writes_no_start_up_lines_of_tensorflow():
    done = _command("list")
    assert done.returncode == 0, done.stderr
    assert "robust-overfitting" in done.stdout
    assert done.stderr == ""


def test_tensorflows_own_setting_for_all_messages_shows_them():
    done = _command("list", TF_CPP_MIN_LOG_LEVEL="0")
    assert done.returncode == 0, done.stderr
    assert "absl::InitializeLog()" in done.stderr


@pytest.mark.parametrize("backend", ["torch", "numpy", "bogus"])
@pytest.mark.parametrize("args", [["--help"], ["--version"], ["list"]])
def test_an_unsupported_backend_is_one_error_line_with_status_2(backend, args):
    done = _command(*args, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "robustlab: error: robustlab supports the Keras backends 'tensorflow', 'jax'; set "
        "KERAS_BACKEND to one of them before importing keras. "
        f"Received: backend={backend!r}\n")


def test_robustlabs_refusal_of_the_backend_is_an_error_line(monkeypatch, capsys):
    # As when `import robustlab` refuses it (here robustlab is imported
    # already: the refusal is raised where the import would have been).
    from robustlab import backend

    monkeypatch.setenv("KERAS_BACKEND", "torch")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setattr(_robustlab_command, "_look_for_devices", backend.check_requested)
    assert _robustlab_command.main(["list"]) == 2
    assert capsys.readouterr().err.startswith("robustlab: error: robustlab supports the "
                                              "Keras backends")


def test_any_other_import_error_is_not_taken_for_the_backends(monkeypatch):
    def missing(*args, **kwargs):
        raise ImportError("No module named 'tensorflow_datasets'")

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setattr(_robustlab_command, "_look_for_devices", missing)
    with pytest.raises(ImportError, match="tensorflow_datasets"):
        _robustlab_command.main(["list"])


def test_ctrl_c_while_robustlab_loads_is_one_line_with_status_130():
    # Ctrl-C in the seconds the import takes (here as it ends, when
    # TensorFlow looks for its devices): a line and 130 as in a command, not
    # a traceback through the import after TensorFlow's start-up lines.
    done = _python("import sys, _robustlab_command\n"
                   "def interrupted():\n"
                   "    raise KeyboardInterrupt\n"
                   "_robustlab_command._look_for_devices = interrupted\n"
                   "sys.exit(_robustlab_command.main(['list']))")
    assert done.returncode == 130, done.stderr
    assert done.stdout == ""
    assert done.stderr == "\nrobustlab: interrupted\n"
