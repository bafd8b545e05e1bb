"""The documentation's images and links to files exist in the repository."""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(
    os.path.relpath(p, ROOT) for pattern in ("README.md", "docs/*.md", "benchmarks/*.md")
    for p in glob.glob(os.path.join(ROOT, pattern)))
# [text](target) and ![alt](target), not web addresses or anchors.
LOCAL_LINK = re.compile(r"!?\[[^\]]*\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def test_there_are_pages_to_check():
    assert "README.md" in PAGES and "docs/RESULTS.md" in PAGES


@pytest.mark.parametrize("page", PAGES)
def test_every_local_link_and_image_of_a_page_exists(page):
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    targets = [t.split("#")[0] for t in LOCAL_LINK.findall(text)]
    missing = [t for t in targets
               if not os.path.exists(os.path.join(ROOT, os.path.dirname(page), t))]
    assert not missing, f"{page} links to files that do not exist: {missing}"
