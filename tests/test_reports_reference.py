"""The paper's reference numbers: every known cell has provenance, gaps are labelled, flags resolve."""

from reports.reference import UNKNOWN, canonical_method, canonical_value, load_reference


def test_every_known_cell_has_provenance_and_every_gap_is_nf():
    ref = load_reference()
    cells = ref.cells()
    assert len(cells) > 100
    known = [c for c in cells if c.known]
    unknown = [c for c in cells if not c.known]
    assert known and unknown
    for c in known:
        assert c.provenance, c
        assert set(c.provenance) <= set(ref.sources), c
        assert c.provenance_label.startswith("[")
    for c in unknown:
        assert c.provenance == () and c.provenance_label == UNKNOWN and c.display() == UNKNOWN
    for d in ref.deltas():
        assert d.value is None or (d.provenance and set(d.provenance) <= set(ref.sources)), d


def test_flags_resolve_to_known_inconsistencies():
    ref = load_reference()
    used = {f for c in ref.cells() for f in c.flags} | {f for d in ref.deltas() for f in d.flags}
    assert used <= set(ref.inconsistencies)
    assert {"pf_120s_sc_bc", "pf_120s_aq_drop", "dd_strongest_baseline"} <= used


def test_table1_key_values_and_inconsistency_flags():
    ref = load_reference()
    c = ref.lookup("table1", "vbench.dynamic_degree", method="PackForcing", seconds=60)
    assert c.value == 56.25 and "P" in c.provenance and "A" in c.provenance and not c.flags
    sc120 = ref.lookup("table1", "vbench.subject_consistency", method="packforcing", seconds=120.0)
    assert sc120.value == 92.84 and "pf_120s_sc_bc" in sc120.flags and sc120.display().startswith("92.84?")
    assert "dd_strongest_baseline" in ref.lookup("table1", "vbench.dynamic_degree", method="deep_forcing",
                                                 seconds=60).flags
    cv120 = ref.lookup("table1", "vbench.dynamic_degree", method="causvid", seconds=120)
    assert cv120.value == 50.0 and cv120.provenance == ("D",)
    rf = ref.lookup("table1", "vbench.imaging_quality", method="Rolling-Forcing", seconds=60)
    assert rf is not None and not rf.known
    assert ref.lookup("table1", "vbench.imaging_quality", method="longlive", seconds=120).provenance_label == "n/f"


def test_other_tables_and_text_deltas():
    ref = load_reference()
    assert ref.lookup("table2", "clip_drop", method="self_forcing", seconds=60).value == -6.77
    assert ref.lookup("table2", "clip_score_per_segment[0]", method="packforcing", seconds=60).value == 34.04
    assert ref.lookup("table3", "vbench.subject_consistency", sink_frames=0, seconds=60).value == 74.72
    assert not ref.lookup("table3", "vbench.subject_consistency", sink_frames=16, seconds=60).known
    assert ref.lookup("table4", "clip_score", compressor="dual", seconds=60).value == 33.54
    assert "hr_lr_order" in ref.lookup("table4", "clip_score", compressor="hr_only", seconds=60).flags
    t5 = {d.metric: d.value for d in ref.table("table5").deltas}
    assert t5 == {"vbench.subject_consistency": 0.8, "clip_score": 0.12}
    assert ref.table("table8").deltas[0].value == 0.62 and ref.table("table8").deltas[0].provenance == ("S",)
    assert ref.lookup("table7", "clip_score_per_20s[5]", sink_frames=0, seconds=120).value == 28.51
    ids = {d.id for d in ref.statements}
    assert {"dd_gain_60s", "dd_gain_120s", "sf_sc_60_to_120", "pf_aq_60_to_120", "kv_bounded"} <= ids
    # Table 9: no table value known; the text's KV figures are marked approximate
    kv = ref.lookup("table9", "kv_bytes", method="packforcing", seconds=120)
    assert kv.approx and abs(kv.value - 3.99e9) < 0.01e9
    assert not ref.lookup("table9", "fps_model", method="packforcing", seconds=120).known


def test_deep_forcing_is_a_separate_labelled_source():
    ref = load_reference()
    t = ref.table("deep_forcing_table1")
    assert t.source == "deep_forcing" and "Deep Forcing" in t.title
    cells = [c for c in t.cells if c.known]
    assert len(cells) == 10 * 8 and all(c.provenance == ("DF",) for c in cells)
    assert ref.lookup("deep_forcing_table1", "vbench.subject_consistency", method="causvid", seconds=60).value == 97.81
    assert not any(c.source == "deep_forcing" for c in ref.cells("table1"))


def test_aliases():
    assert canonical_method("Self-Forcing") == "self_forcing" == canonical_method("SelfForcing")
    assert canonical_method("DeepForcing") == "deep_forcing"
    assert canonical_value("selection", "top_k") == "topk"
    assert canonical_value("compressor", "HR+LR") == "hr+lr"
    assert canonical_value("seconds", 60.0) == 60
    assert canonical_value("rope_adjust", "on") is True
