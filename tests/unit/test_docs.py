"""The manual builds with `mkdocs build --strict` (a broken link or anchor fails it), the README
stays a front page, and no document points at a file outside the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_manual_builds_strictly(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    for page in ("index", "running", "configuration", "families", "deployment", "testing"):
        assert (tmp_path / ("" if page == "index" else page) / "index.html").is_file(), page
    assert (tmp_path / "img" / "data-path.svg").is_file()


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 350, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    assert "## Two commands" in lines and "## Tests" in lines


def test_no_document_points_outside_the_repository():
    for path in DOCS:
        text = path.read_text()
        for outside in ("DESIGN.md", "REFERENCE.md", "../shared"):
            assert outside not in text, f"{path.relative_to(REPO)} cites {outside}"
