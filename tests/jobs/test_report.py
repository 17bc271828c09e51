"""``ebmlab report``: one page per set of runs, with every picture, the metric curves, the
settings, the saved evaluation and, with several runs, the comparison table.

Two tiny runs made through the CLI (a 2-D DSM run and a binary RBM on digits, a few dozen
updates each, few picture samples) serve every test; the 2-D run is evaluated with
``evaluate --json`` so it holds an ``evaluation.json``. The browser test renders the page in
headless Chromium (skipped when it is not installed) and reads back the natural width of every
image after load, so an image that does not decode fails it.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.jobs.report import MARKER, write_report
from ebmlab.jobs.report_html import ASSETS_MARKER

DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def invoke(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    points, rbm = root / "points", root / "rbm"
    common = ["--no-progress", "--plot-samples", 100, "--plot-sampler-steps", 5]
    invoke("train", "--steps", 30, "--batch-size", 64, "--hidden", "16", "--out", points, *common)
    invoke("train", "--data", "digits-binary", "--model", "rbm", "--hidden", "8", "--steps", 20, "--out", rbm, *common)
    return points, rbm


@pytest.fixture(scope="module")
def evaluated(runs) -> dict:
    """``evaluate --json`` on the 2-D run: the printed object, also saved as RUN/evaluation.json."""
    points, _ = runs
    output = invoke("evaluate", "--energy", points, "--log-partition", "quadrature", "--grid-points", 64,
                    "--data", "heldout", "--no-metrics", "--json")
    return json.loads(output)


def test_evaluate_json_is_saved_in_the_run(runs, evaluated):
    points, _ = runs
    assert json.loads((points / "evaluation.json").read_text()) == evaluated
    assert evaluated["method"] == "quadrature" and "nll" in evaluated


def pictures(run: Path) -> list[Path]:
    return sorted(run.glob("*.png"))


def test_report_of_one_run(runs, evaluated, tmp_path):
    points, _ = runs
    out = tmp_path / "one.html"
    assert f"wrote {out} (1 run)" in invoke("report", points, "--out", out)
    page = out.read_text()
    assert page.startswith(MARKER)
    inlined = [base64.b64decode(b) for b in DATA_URI.findall(page)]
    assert {p.name for p in pictures(points)} == {"density.png", "samples.png", "loss.png"}
    for picture in pictures(points):  # every picture, byte for byte, captioned with its name
        assert picture.read_bytes() in inlined and f"<figcaption>{picture.name}</figcaption>" in page
    assert len(inlined) == len(pictures(points)) + 1  # and the metric curves drawn from metrics.jsonl
    assert all(png.startswith(b"\x89PNG") for png in inlined)
    for section in ("[data]", "[model]", "[objective]", "[optim]", "[run]"):
        assert f"<caption>{section}</caption>" in page
    assert "<th>nll</th>" in page and f"{evaluated['nll']:.4g}" in page  # the saved evaluation
    assert 'class="comparison"' not in page  # one run: nothing to compare
    assert not re.search(r'(src|href)="(?!data:|#)', page) and "http" not in page  # self-contained


def test_report_of_two_runs_compares_them(runs, evaluated, tmp_path):
    points, rbm = runs
    out = tmp_path / "two.html"
    invoke("report", points, rbm, "--out", out)
    page = out.read_text()
    inlined = [base64.b64decode(b) for b in DATA_URI.findall(page)]
    for picture in pictures(points) + pictures(rbm):
        assert picture.read_bytes() in inlined
    assert {p.name for p in pictures(rbm)} == {"samples.png", "data.png", "chains.png", "loss.png"}
    assert len(inlined) == len(pictures(points)) + len(pictures(rbm)) + 2 + 1  # curves of each + the comparison
    table = page[page.index('<table class="comparison">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 3 and ">points</a>" in table and ">rbm</a>" in table
    assert "<th>final loss</th>" in table and "<th>nll</th>" in table  # evaluation figures of the run that has them
    differ = page[page.index('<table class="settings-differ">'):]
    differ = differ[:differ.index("</table>")]
    for key in ("model.name", "objective.name", "data.name", "optim.steps"):
        assert f"<tr><th>{key}</th>" in differ
    assert "<tr><th>run.seed</th>" not in differ  # the same in both runs
    assert '<tr class="differs"><th>name</th>' in page  # highlighted in each run's settings


def test_report_markdown_links_the_pictures(runs, tmp_path):
    points, rbm = runs
    out = tmp_path / "notes" / "report.md"
    out.parent.mkdir()
    invoke("report", points, rbm, "--out", out)  # the format from the suffix
    text = out.read_text()
    assert text.startswith(MARKER) and "| run | steps | final loss |" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    targets = [(out.parent / link).resolve() for link in links]
    assert all(not Path(link).is_absolute() for link in links) and all(t.is_file() for t in targets)
    assert {p.resolve() for p in pictures(points) + pictures(rbm)} <= set(targets)
    files = out.parent / "report_files"
    assert (files / ASSETS_MARKER).is_file() and {"comparison.png", "run0-metrics.png", "run1-metrics.png"} <= {
        p.name for p in files.iterdir()}
    again = tmp_path / "again.md"
    invoke("report", points, "--format", "md", "--out", again)  # an earlier report and its folder are replaced
    invoke("report", points, "--format", "md", "--out", again)


def test_report_never_overwrites_what_is_not_a_report(runs, tmp_path):
    points, _ = runs
    out = tmp_path / "notes.html"
    out.write_text("<html>my notes</html>")
    result = CliRunner().invoke(main, ["report", str(points), "--out", str(out)])
    assert result.exit_code == 2 and "not an ebmlab report" in result.output
    assert out.read_text() == "<html>my notes</html>"
    (tmp_path / "page_files").mkdir()
    with pytest.raises(ValueError, match="not written by ebmlab report"):
        write_report([points], tmp_path / "page.md")
    assert not (tmp_path / "page.md").exists()
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "not a run directory" in result.output
    previous = tmp_path / "previous.html"
    write_report([points], previous)
    write_report([points], previous)  # a report replaces a report
    assert previous.read_text().startswith(MARKER)


def chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)


PROBE = """<script>window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.setAttribute("data-widths", images.map(i => i.complete ? i.naturalWidth : -1).join(","));
  document.body.setAttribute("data-rows", document.querySelectorAll("table.comparison tbody tr").length);
});</script>"""


def test_report_renders_in_a_browser(runs, tmp_path):
    """Headless Chromium loads the page from disk (no network); every image decodes to a
    non-zero natural width, the comparison table has a row per run, and the screenshot is not blank."""
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    points, rbm = runs
    out = write_report([points, rbm], tmp_path / "report.html")
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", PROBE + "</body>"))
    flags = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r'<body data-widths="([-0-9,]*)" data-rows="(\d+)"', dom)
    assert body is not None, dom[:500]
    widths = [int(w) for w in body.group(1).split(",")]
    assert len(widths) == len(pictures(points)) + len(pictures(rbm)) + 3 and min(widths) > 0
    assert int(body.group(2)) == 2
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1280,1600", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1280) and pixels.std() > 0.05  # text, tables and plots, not a blank page


def test_report_values_keep_their_unicode():
    """Warnings such as "≈ 0.0577" read as written in Markdown and HTML, not as JSON escapes."""
    from ebmlab.jobs.report_runs import format_value

    assert format_value(["missing mass ≈ 0.0577", 1.5]) == '["missing mass ≈ 0.0577", 1.5]'
    assert format_value({"σ": "≈"}) == '{"σ": "≈"}'
    assert "\\u" not in format_value(["κ₀ → ∞"])


def test_a_classifier_runs_held_out_figures_are_in_the_report(runs, tmp_path):
    """classification.json (accuracy, ECE) shows in the run's section and in the comparison table;
    a run without one shows none (negative control)."""
    points, _ = runs
    jem = tmp_path / "jem"
    shutil.copytree(points, jem)
    (jem / "classification.json").write_text(json.dumps({"accuracy": 0.9812, "ece": 0.0421, "nll": 0.07}))
    out = tmp_path / "report.md"
    invoke("report", points, jem, "--out", out, "--format", "md")
    text = out.read_text(encoding="utf-8")
    assert "held-out accuracy" in text and "0.9812" in text and "### Classification" in text
    assert text.count("### Classification") == 1  # only the run that has one
