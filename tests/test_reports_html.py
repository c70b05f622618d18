"""The HTML report: built from a synthetic store, then opened in headless Chromium."""

import re
import shutil
import subprocess
from html import escape as html_escape

import pytest

from reports.build import build
from reports.synthetic import make_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--virtual-time-budget=10000"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    root = make_store(tmp / "results", "toy", sweeps=("methods", "sink_size"), n_prompts=1, n_seeds=2,
                      lengths=(8,))
    make_store(root, "wan", sweeps=("selection",), n_prompts=2, n_seeds=1)
    index = build(root, tmp / "site")
    return index


def test_report_files_and_relative_links(site):
    out = site.parent
    html = site.read_text()
    for name in ("tables.md", "tables.tex", "reference.md"):
        assert (out / name).stat().st_size > 0
    pngs = sorted((out / "plots").glob("*.png"))
    assert pngs and all(p.with_suffix(".svg").is_file() for p in pngs)
    assert {p.stem.split("-")[0] for p in pngs} >= {"clip_over_time", "kv_vs_length", "block_latency", "ablation"}
    assert list((out / "media").glob("*.png"))  # frame strips made with PyAV
    links = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert links and not [u for u in links if u.startswith(("/", "file:", "http"))]
    assert "<video" in html and "../results/" in html and str(out.parent) not in html  # no absolute paths
    assert html.count('class="banner toy"') == 1 and "TOY SCALE" in html  # one TOY banner
    assert "[Deep Forcing paper]" in html and "n/f" in html
    assert 'id="findings-link" href="findings/findings.md"' in html and (out / "findings" / "findings.md").is_file()
    # the sweep's evidence table holds the same numbers as its table.md
    from harness.table import sweep_table

    t = sweep_table(out.parent / "results", "sink_size", scale="toy")
    ref_row = next(r for r in t.rows if r.is_reference)
    assert html_escape(t.fmt("clip_score", ref_row.cells["clip_score"].estimate)) in html
    assert 'id="speed-memory"' in html and "kv_bytes (MB) ↓" in html


def test_samples_are_matched_on_prompt_and_seed(site):
    html = site.read_text()
    blocks = re.findall(r'<div class="sample" data-sweep="([^"]+)" data-prompt-id="([^"]+)" data-seed="([^"]+)">(.*?)'
                        r"</table></div></div>", html, re.S)
    assert {b[0] for b in blocks} == {"methods", "sink_size", "selection"}
    for sweep, pid, seed, body in blocks:
        cells = re.findall(r'<tr class="sample-cell" data-prompt-id="([^"]+)" data-seed="([^"]+)"', body)
        assert len(cells) >= 2 and set(cells) == {(pid, seed)}, sweep  # every value shows the same prompt and seed
        assert f"synthetic prompt {pid}" in body and "frames at 0.0 s" in body


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(site, tmp_path):
    html = site.read_text()
    n_tables, n_imgs = html.count("<table"), html.count("<img ")
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(cmd + ["--dump-dom", site.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'<p id="render-check"([^>]*)>', dom.stdout)
    assert m, "render-check element missing from the dumped DOM"
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1)))
    assert attrs, f"the page's load script did not run: {m.group(0)}"
    assert int(attrs["tables"]) == n_tables > 10
    assert int(attrs["images"]) == n_imgs > 5
    assert int(attrs["images-loaded"]) == n_imgs, f"broken images: {attrs.get('broken')}"
    # the rendered DOM holds matched samples (one prompt and seed per sweep, under every value) and metadata
    rows = re.findall(r'<tr class="sample-cell" data-prompt-id="([^"]+)" data-seed="([^"]+)"', dom.stdout)
    assert len(rows) >= 4 + 4 + 2 and len(set(rows)) <= 3
    for field in ("git sha", "weights (DiT)", "weights (VAE)", "length", "prompts", "seeds"):
        assert f'<tr data-field="{field}">' in dom.stdout, field
    assert "d1d1d1d1d1d1d1d1" in dom.stdout and "synthetic prompt 0" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(cmd + [f"--screenshot={shot}", "--window-size=1280,2000", site.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
