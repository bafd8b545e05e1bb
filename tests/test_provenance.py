"""Which code produced a result: the digest of robustlab's sources."""

import keras
import pytest

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


def test_the_identity_names_robustlab_its_sources_keras_and_the_backend():
    identity = provenance.code_identity()
    assert identity["robustlab"] == __version__
    assert identity["robustlab_sources"] == provenance.source_digest()
    assert identity["keras"] == keras.__version__
    assert identity["backend"].startswith(keras.backend.backend() + " ")
