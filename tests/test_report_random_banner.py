"""Reports over random stand-in weights (issue 19, item 5): every page starts with the RANDOM-WEIGHTS banner,
"ours vs paper" rows of random-weight cells are flagged row by row, findings verdicts on them are labelled
meaningless, and a store without such cells shows none of it."""

import json
import re

import pytest

import reports.build
import reports.findings
from harness.config import RANDOM_WEIGHTS_TAG
from harness.config import RANDOM_WEIGHTS_TAG as TAG
from reports.build import build
from reports.cells import Row, is_random_weights, load_results, random_flag, random_weights_banner
from reports.synthetic import make_store
from tests.test_reports_findings import write_cells

PAGES = ("index.html", "tables.md", "tables.tex", "reference.md", "findings/findings.md")


def _store(root, random: bool):
    """Wan-scale methods + selection sweeps and a toy findings sweep. With ``random``: every Self-Forcing
    cell, one of the two CausVid 60 s cells and the findings' sink0 cells carry the rehearsal's tag."""
    make_store(root, "wan", sweeps=("methods", "selection"), n_prompts=2, n_seeds=1, videos=False)
    write_cells(root, {"packforcing": 0.0, "sink0": 1.0, "rope_off": 0.0})
    n = 0
    for path in sorted(root.glob("*/cells/*.json")):
        c = json.loads(path.read_text())
        if random and ((c["method"] == "self_forcing")
                       or (c["method"] == "causvid" and c["seconds"] == 60 and c["prompt_id"] == 0)
                       or c["axes"].get("variant") == "sink0"):
            c["config"] = {**(c.get("config") or {}), "tag": RANDOM_WEIGHTS_TAG}
            path.write_text(json.dumps(c))
            n += 1
    return root, n, len(list(root.glob("*/cells/*.json")))


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("random-banner")
    out = {}
    with pytest.MonkeyPatch.context() as mp:  # the pages are under test, not the plots (most of a build's time)
        mp.setattr(reports.build, "build_plots", lambda *a, **k: [])
        mp.setattr(reports.findings, "_plot", lambda *a, **k: None)
        for random in (True, False):
            root, n, total = _store(tmp / f"results-{random}", random)
            site = tmp / f"site-{random}"
            build(root, site, media=False)
            out[random] = (site, n, total)
    return out


def test_the_tag_is_defined_once():
    assert TAG is RANDOM_WEIGHTS_TAG == "random-weights-rehearsal"


def test_detection_reads_the_config_tag():
    assert is_random_weights({"config": {"tag": RANDOM_WEIGHTS_TAG}})
    assert not is_random_weights({"config": {"tag": ""}}) and not is_random_weights({"config": None})
    assert not is_random_weights({})
    rows = [Row("h", "s", "done", "m", "wan", 60, 0, 0, random_weights=r) for r in (True, False, True)]
    assert random_flag(rows[:1]) == "random weights"
    assert random_flag(rows) == "random weights (2 of 3 cells)"
    assert random_flag(rows[1:2]) is None
    assert random_weights_banner(0, 5) is None


def test_every_page_starts_with_the_banner(sites):
    site, n, total = sites[True]
    banner = random_weights_banner(n, total)
    assert banner.startswith(f"RANDOM-WEIGHTS REHEARSAL: {n} of {total} cells") and RANDOM_WEIGHTS_TAG in banner
    index = (site / "index.html").read_text()
    body = index.split("<body>", 1)[1]
    assert body.startswith('\n<div class="banner random" id="random-banner"') and banner in body.split("\n")[1]
    assert (site / "tables.md").read_text().splitlines()[0] == f"> **{banner}**"
    assert (site / "reference.md").read_text().splitlines()[0] == f"> **{banner}**"
    assert (site / "tables.tex").read_text().splitlines()[0] == f"% {banner}"
    findings = (site / "findings" / "findings.md").read_text().splitlines()[0]
    assert findings.startswith("> **RANDOM-WEIGHTS REHEARSAL: 16 of 48 cells") and "mean nothing" in findings


def _compare_rows(md: str) -> dict[tuple[str, str], list[str]]:
    """(row label, metric) -> cells of every row of the 'Table 1 ours vs paper, 60 s' table in tables.md."""
    block = md.split("### Table 1 ours vs paper, 60 s", 1)[1].split("###", 1)[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and cells[0] != "Row":
            rows[(cells[0], cells[1])] = cells
    return rows


def test_ours_vs_paper_rows_are_flagged_row_by_row(sites):
    site, _, _ = sites[True]
    md = (site / "tables.md").read_text()
    rows = _compare_rows(md)
    by_method = {}
    for (label, _), cells in rows.items():
        by_method.setdefault(label, []).append(cells)
    sf, cv, pf = (by_method[k] for k in ("Self-Forcing", "CausVid", "PackForcing"))
    assert all(c[2].endswith(" (random)") and c[-1].startswith("random weights") for c in sf)
    assert all(c[-1].startswith("random weights (1 of 2 cells)") and c[2].endswith(" (random)") for c in cv)
    assert not any("random" in " ".join(c) for c in pf)  # a real row in a mixed table stays as it was
    # the tables of a sweep with random cells say so themselves (a copied table keeps the line)
    assert re.search(r"### Table 1 ours vs paper, 60 s \(sweep 'methods'\)\n\n> \*\*RANDOM WEIGHTS: \d+ of \d+ "
                     r"cells of sweep 'methods'", md)
    tex = (site / "tables.tex").read_text()
    assert "[RANDOM WEIGHTS: not a result]" in tex
    html = (site / "index.html").read_text()
    assert "RANDOM WEIGHTS</span>" in html and "(random)</td>" in html
    # the selection sweep has no random cell: its tables carry no mark
    sel = md.split("(sweep 'selection'", 1)[1].split("###", 1)[0]
    assert "random" not in sel.lower()


def test_findings_verdicts_on_random_cells_are_labelled_meaningless(sites):
    site, _, _ = sites[True]
    md = (site / "findings" / "findings.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| sink 8 vs 0")]
    assert lines and all("**RANDOM WEIGHTS, meaningless: " in ln for ln in lines)
    rope = [ln for ln in md.splitlines() if ln.startswith("| RoPE adjustment vs none")]
    assert rope and not any("RANDOM" in ln for ln in rope)
    claims = json.loads((site / "findings" / "findings.json").read_text())["claims"]
    by = {(c["variant"], c["metric"]): c for c in claims}
    assert by[("sink0", "clip_score")]["random_weights"] == 16  # the raw verdict stays the rule's output
    assert by[("sink0", "clip_score")]["verdict"] == "reproduced"
    assert by[("rope_off", "clip_score" if ("rope_off", "clip_score") in by else "clip_drop")]["random_weights"] == 0


def test_a_store_without_random_cells_has_no_banner(sites):
    site, _, _ = sites[False]
    for page in PAGES:
        text = (site / page).read_text()
        assert "RANDOM" not in text and "(random)" not in text and "random weights" not in text, page
    assert all("random_weights" not in c
               for c in json.loads((site / "findings" / "findings.json").read_text())["claims"])
    assert not any(r.random_weights for r in load_results(site.parent / "results-False").rows)
