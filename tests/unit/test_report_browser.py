"""report.html in a real headless browser (Debian's chromium; `.ci/run` installs it, and these
tests skip where none is installed): every plot decodes and renders, the plots sit in a grid
that has several columns on a wide window and one on a narrow one, the funnel chart's bars are
on screen, the conversations are there with their fates, and a broken plot is caught."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from magpie_ray.run_report import write_report
from magpie_ray.steps import export
from tests.unit.test_dataset_card import _run_folder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium here (Debian's chromium: .ci/run installs it)"
)
FUNNEL_BLUE = (76, 114, 176)  # #4c72b0, the funnel chart's bars


def _chromium(*args: str) -> str:
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rendered(url: str, width: int) -> tuple[dict, str]:
    """What the page's own check recorded once loaded, and the DOM as rendered."""
    dom = _chromium(f"--window-size={width},1200", "--dump-dom", url)
    found = re.search(r'<html data-rendered="([^"]*)"', dom)
    assert found, dom[:500]
    return json.loads(found.group(1).replace("&quot;", '"')), dom


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("report")
    cfg, store = _run_folder(tmp_path)
    export.run_step(cfg, store)
    return Path(write_report(store, "browser test", [], requested=cfg.generate.num_samples))


def test_every_plot_renders_in_a_grid_that_follows_the_window(report):
    images = report.read_text().count("<img ")
    wide, dom = _rendered(report.as_uri(), 1400)
    assert wide == {"images": images, "broken": 0, "columns": 3}, wide
    narrow, _ = _rendered(report.as_uri(), 500)
    assert narrow["columns"] == 1 and narrow["broken"] == 0
    # conversations with their fates and tags, after the page's layout ran
    # 4 kept, 4 the filter dropped (texts from deduped/), 2 dropped at generation (no text)
    assert dom.count('class="card conv"') == 4 + 4 + 2
    assert "dropped by the filter: difficulty &lt;= medium (" in dom
    assert "dropped at generation: empty_instruction" in dom
    assert "Question 0 (seed 0)?" in dom


def test_the_funnel_chart_is_on_screen(report, tmp_path):
    import numpy as np
    from PIL import Image

    shot = tmp_path / "shot.png"
    _chromium("--window-size=1400,1000", f"--screenshot={shot}", report.as_uri())
    image = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert image.shape == (1000, 1400, 3)
    top_left = image[:700, :900]
    blue = int((np.abs(top_left - np.array(FUNNEL_BLUE)).max(axis=2) < 12).sum())
    assert blue > 5000, f"{blue} pixels of the funnel's bars in the top left"


def test_a_broken_plot_is_caught_and_shown(report, tmp_path):
    text = report.read_text()
    broken = tmp_path / "broken.html"
    # one plot's PNG cut short: the browser cannot decode it
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken.write_text(text[:start] + "iVBORw0KGgoAAAA" + text[text.index('"', start) :])
    rendered, dom = _rendered(broken.as_uri(), 1400)
    assert rendered["broken"] == 1
    assert "1 plot(s) failed to render" in dom and "display: block" in dom
