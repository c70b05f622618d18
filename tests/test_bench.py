"""packforcing.bench: the CPU smoke run (its JSON keeps every field), the no-CUDA skip, the cost model shared
with the budget tool, the planner, targets from recorded numbers, and the spans the policies emit."""

import json
import math
import time
from pathlib import Path

import pytest
import torch

from packforcing.bench import cost, plan, targets, timing
from packforcing.bench.__main__ import main, parser
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
SMOKE = [
    "--allow-cpu", "--force-cpu", "--preset", "tiny", "--lengths", "2,3", "--policies", "packforcing,window,sink_window,full",
    "--skip", "profile,compile,plot", "--e2e-modes", "overlap,blocking,priority", "--e2e-blocks", "3", "--topk-blocks", "7",
    "--topk-mid-capacity", "6", "--pf-opts", "top_k=2", "--warmup-blocks", "0", "--sweep-reps", "1",
    "--backends", "sdpa,cudnn", "--e2e-timings", "events,sync",
]


def key_paths(o, pre: str = "") -> set[str]:
    """Every key path of a JSON value; numeric keys (lengths) as '<n>', list items as '[]'."""
    out = set()
    if isinstance(o, dict):
        for k, v in o.items():
            try:
                float(k)
                k = "<n>"
            except ValueError:
                pass
            p = f"{pre}.{k}" if pre else k
            out.add(p)
            out |= key_paths(v, p)
    elif isinstance(o, list):
        for v in o:
            out |= key_paths(v, pre + "[]")
    return out


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One CPU smoke run of every section but profile/compile/plot; its JSON and printed summary."""
    out = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.delenv("OUT", raising=False)
    torch.set_num_threads(1)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(SMOKE + ["--out", str(out)])
    mp.undo()
    files = sorted(out.glob("perf_*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text()), buf.getvalue()  # strict JSON: no NaN


def test_cpu_smoke_run_writes_json(smoke):
    d, out = smoke
    for key in ("schema", "command", "env", "ceilings", "backends", "backend_used", "floor", "plan", "policies",
                "e2e", "targets", "errors", "sections"):
        assert key in d, key
    assert d["status"] == "done"
    assert d["errors"] == [], d["errors"]
    assert d["backends"]["sdpa"]["status"] == "ok"
    assert d["backends"]["cudnn"]["status"] == "error"  # no cuDNN attention on the CPU: recorded, not fatal
    assert d["backend_used"] == "sdpa"
    assert d["compile_elementwise"] is False and d["model"]["compile_elementwise"] is False  # auto: on with CUDA only
    pf = d["policies"]["packforcing"]
    assert pf["status"] == "done" and pf["blocks_done"] == 3
    assert len(pf["series"]["latency_s"]) == 3 and all(x > 0 for x in pf["series"]["latency_s"])
    assert set(pf["at_length"]) == {"2", "3"} and "p50_ms" in pf["at_length"]["3"]
    assert pf["fps_model"] > 0
    # the first block past the sink is compressed, timed by its span: with the LR branch (hr+lr, the default) at the
    # start of the next block, from the frames handed to it; the packforcing_topk run (7 blocks) has next blocks
    tk = d["policies"]["packforcing_topk"]
    assert tk["series"]["compress_ms"][3] > 0
    assert d["policies"]["window"]["block_frames"] == 3
    tk = d["policies"]["packforcing_topk"]
    assert tk["topk_blocks_scored"] >= 1 and tk["topk_scoring_share_scored"] > 0  # scoring ran and was timed
    for mode in ("overlap", "blocking", "priority"):
        assert d["e2e"][mode]["frames"] == 13 + 16 + 16
        # 3 blocks never reach the saturated cache: the steady rate says it is optimistic
        assert d["e2e"][mode]["steady_from_block"] == 1 and "cache still filling" in d["e2e"][mode]["steady_note"]
    for mode in ("overlap", "blocking", "priority"):  # --e2e-timings events,sync: the same frames, apart
        e, n = d["e2e"][mode], d["e2e_sync"][mode]
        assert e["stats_timing"] == "events" and n["stats_timing"] == "sync" and n["frames"] == e["frames"]
    assert d["config"]["e2e_timings"] == ["events", "sync"]
    assert d["vae"]["channels_last"] is False and d["vae"]["compile"] is False  # the pipeline's CPU defaults
    assert any(t["target"].startswith("packforcing model-only FPS") for t in d["targets"])
    assert "policy" in out and ("[PASS]" in out or "[FAIL]" in out)


def test_json_keeps_every_field_of_the_single_module_bench(smoke):
    d, _ = smoke
    before = json.loads((ROOT / "tests/fixtures/bench_cpu_smoke_keys.json").read_text())["keys"]
    # issue 18: the host archive's bytes; env.cuda_graphs and series.mid_copies (seventh session); the gather a
    # packforcing run resolved (twelfth session: gather=auto is recorded as the path it took); config.fp8, the
    # opt-in's switch (thirteenth session; model.fp8 appears only with --fp8 on); config.trace_blocks (fourteenth;
    # policies.packforcing.trace appears only with --trace-blocks N); env.ffn_epilogue / env.qk_kernel and
    # config.forward_ab / ab_reps (sixteenth; forward_ab appears only with --forward-ab); each policy's resolved
    # speed-only choices (engine_policy), config.commit_ab_reps and the commit_ab record (seventeenth);
    # each e2e record's stats_timing and its switch (eighteenth); e2e_sync, the end-to-end modes again under the
    # timing the default replaced, config.e2e_timings and env.elementwise_tune (nineteenth); env.pass_merge,
    # env.rope_cos_sin (twenty-first); env.denoise_graphs (twenty-second)
    added = {k for k in key_paths(d) if k.endswith((".host_bytes", "series.mid_copies", "kwargs.gather", ".stats_timing"))
             or k.split(".")[0] == "e2e_sync" or k.startswith("sections.e2e_sync:")
             or k in ("config.e2e_timings", "config.stats_timing")
             or ".engine_policy" in k or k.split(".")[0] == "commit_ab" or k.endswith(".ttff_first_block_s")
             or k in ("env.cuda_graphs", "env.ffn_epilogue", "env.qk_kernel", "env.qkv_fused", "env.elementwise_tune",
                      "env.pass_merge", "env.rope_cos_sin", "env.denoise_graphs", "config.fp8",
                      "config.trace_blocks", "config.commit_ab_reps",
                      "config.forward_ab", "config.ab_reps")}
    assert added and key_paths(d) - added == set(before)


def test_json_fields_are_those_of_the_committed_perf_records(smoke):
    """Every field the CPU run writes is in a perf JSON committed from an H100 run (reports/perf/), except the
    ones this command's options or the CPU add (top_k override, the cuDNN backend's error, the steady note)."""
    d, _ = smoke
    recorded = set()
    for f in sorted((ROOT / "reports/perf").glob("perf_*.json")):
        recorded |= key_paths(json.loads(f.read_text()))
    extra = {k for k in key_paths(d) - recorded
             if not k.endswith((".top_k", "steady_note", ".host_bytes", "series.allocated_now_bytes",
                                "series.mid_copies", "kwargs.gather"))  # added after the last GPU record read here
             and ".engine_policy" not in k and k.split(".")[0] != "commit_ab" and not k.endswith(".ttff_first_block_s")  # seventeenth session
             and not k.endswith(".stats_timing")  # eighteenth
             and k.split(".")[0] != "e2e_sync" and not k.startswith("sections.e2e_sync:")  # nineteenth
             and k not in ("config.e2e_timings", "config.stats_timing")
             and k not in ("backends.cudnn.error", "config.commit_ab_reps", "env.cuda_graphs", "env.ffn_epilogue", "env.qk_kernel",
                           "env.qkv_fused", "env.elementwise_tune", "env.pass_merge", "env.rope_cos_sin",
                           "env.denoise_graphs", "config.fp8",
                           "config.forward_ab", "config.ab_reps",
                           "config.trace_blocks")}
    assert extra == set()


def test_skips_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    main([])
    assert capsys.readouterr().out.strip() == "skipped: no CUDA device"


def test_allow_cpu_needs_a_small_preset(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--allow-cpu", "--force-cpu", "--preset", "wan2.1-1.3b"])
    assert e.value.code == 2
    assert "--preset tiny" in capsys.readouterr().err


def test_unknown_e2e_mode_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--allow-cpu", "--force-cpu", "--preset", "tiny", "--e2e-modes", "overlapp"])
    assert e.value.code == 2
    assert "unknown end-to-end mode 'overlapp'" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["events,events", "fast", ""])
def test_bad_e2e_timings_is_one_line(capsys, bad):
    with pytest.raises(SystemExit) as e:
        main(["--allow-cpu", "--force-cpu", "--preset", "tiny", "--e2e-timings", bad])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--e2e-timings" in err and "expected sync and/or events, each at most once" in err


def test_e2e_steady_rate_counts_only_blocks_of_the_saturated_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    torch.set_num_threads(1)
    main(["--allow-cpu", "--force-cpu", "--preset", "tiny", "--policies", "packforcing", "--lengths", "2",
          "--skip", "vae,profile,compile,plot,topk", "--backends", "sdpa", "--sweep-reps", "1",
          "--warmup-blocks", "0", "--e2e-modes", "overlap,priority", "--e2e-blocks", "26", "--out", str(tmp_path)])
    d = json.loads(next(tmp_path.glob("perf_*.json")).read_text())
    pf_kw = d["policies"]["packforcing"]["kwargs"]
    rows = cost.plan_rows(get_preset("tiny"), "packforcing", 4, pf_kw, 64)
    sat = cost.saturation_block(rows)
    assert 1 < sat < 22
    for mode in ("overlap", "priority"):
        e = d["e2e"][mode]
        assert e["steady_from_block"] == sat and "steady_note" not in e
        t = e["frames_ready_s"] or e["block_wall_s"]
        gaps = [b - a for a, b in zip(t[:-1], t[1:])][sat:]
        assert e["period_s_median"] == pytest.approx(sorted(gaps)[len(gaps) // 2] if len(gaps) % 2 else
                                                     (sorted(gaps)[len(gaps) // 2 - 1] + sorted(gaps)[len(gaps) // 2]) / 2)
    target = next(t for t in d["targets"] if t["target"].startswith("end-to-end FPS"))
    assert target["value"] == round(max(d["e2e"][m]["fps_steady"] for m in ("overlap", "priority")), 2)


# ---- the cost model (shared with the budget tool) --------------------------------------------------------

def test_flops_and_kv_at_wan_shape():
    cfg = get_preset("wan2.1-1.3b")
    f = cost.forward_flops(cfg, 6240, 27872)
    # perf-anchors.md: 1.07 TFLOP attention + 0.51 TFLOP linear per layer, 47.4 TFLOP per forward
    assert f["attention_self"] / 30 == pytest.approx(1.07e12, rel=0.01)
    assert f["linear"] / 30 == pytest.approx(0.51e12, rel=0.03)
    assert (f["attention_self"] + f["linear"]) == pytest.approx(47.4e12, rel=0.02)
    rows = cost.plan_rows(cfg, "packforcing", 4, {"preset": "paper", "compressor": "hr"}, cost.seconds_to_blocks(120, 4))
    assert rows[-1]["tokens_attended"] == 27872
    assert rows[-1]["kv_bytes"] == 21632 * 184320  # ~3.99 GB (paper.md §2)
    assert cost.seconds_to_blocks(10, 4) == 10 and cost.seconds_to_blocks(10, 3) == 14  # 42 latent frames: rounded up (util.latent_frames)
    assert cost.first_block_past_sink(rows) == 3  # a 2-block sink, then the first block that is compressed
    assert cost.dit_params(cfg) == pytest.approx(1.419e9, rel=1e-3)
    for name in ("tiny", "toy"):  # the formula against real modules (the Wan one is slow to build here)
        small = get_preset(name)
        assert cost.dit_params(small) == sum(p.numel() for p in WanDiT(small).parameters())


def test_block_cost_adds_the_compressed_pass_where_the_plan_declares_n_c():
    cfg = get_preset("wan2.1-1.3b")
    nq, nk, n_c = 4 * 1560, 27872, 182
    plain = cost.block_cost(cfg, {"tokens_attended": nk}, 4, 10**9)
    pf = cost.block_cost(cfg, {"tokens_attended": nk, "n_c": n_c}, 4, 10**9)
    one = cost.forward_flops(cfg, nq, nk)["total"]
    assert plain["flops"] == 5 * one  # 4 denoising steps + the commit pass
    assert pf["flops"] - plain["flops"] == cost.forward_flops(cfg, n_c, nk + n_c)["total"]
    fl = cost.floor_seconds(pf, {})
    assert fl["floor_s"] == max(fl["compute_s"], fl["memory_s"]) and fl["bound"] == "compute"


def test_budget_tool_reads_the_shared_cost_model():
    from packforcing.budget import budget
    from packforcing.cache import CacheSpec

    cfg = get_preset("wan2.1-1.3b")
    out = budget("wan2.1-1.3b", "packforcing", 120)
    rows = cost.plan_video(CacheSpec.from_model(cfg, dtype=torch.bfloat16), "packforcing", {}, cost.latent_frames(120, 4), 4)
    assert {k: out[k] for k in cost.context_cost(rows, 184320)} == cost.context_cost(rows, 184320)
    # the numbers budget printed before the cost model moved (paper.md §2: 27,872 attended, 21,632 held)
    assert (out["latent_frames"], out["active_context_tokens"], out["stored_kv_tokens"], out["n_c"]) == (480, 27872, 21632, 182)
    assert out["stored_kv_bytes"] == 21632 * 184320 and out["stored_kv_gb"] == 3.987
    at_sat = max(rows, key=lambda r: r["tokens_attended"])
    assert out["block_tflops"] == round(cost.block_cost(cfg, at_sat, 4, cost.dit_params(cfg))["flops"] / 1e12, 1)
    assert budget("wan2.1-1.3b", "self_forcing", 5)["latent_frames"] == cost.latent_frames(5, 3) == 21  # rounded up to whole blocks (util.latent_frames)


# ---- the planner ----------------------------------------------------------------------------------------

class _PlanBench:
    """What the planner reads of a run: args, model config, calibration (none: reference rates), time left."""

    def __init__(self, budget_s: float):
        # the configuration these plans were written for (before issue 18's defaults: hr+lr, no extra top-k run)
        self.args = parser().parse_args(["--time-budget", str(budget_s), "--compressor", "hr", "--topk-blocks", "32"])
        self.cfg = get_preset("wan2.1-1.3b")
        self.res = {"calibration": {}, "plan": {}}
        self.device = torch.device("cpu")
        self.deadline = time.perf_counter() + budget_s

    def remaining(self):
        return self.deadline - time.perf_counter()


@pytest.mark.parametrize("budget_s,want,dropped", [
    (600, {"packforcing": 120, "window": 120, "sink_window": 120, "full": 60}, False),
    (300, {"packforcing": 120, "window": 60, "sink_window": 60, "full": 10}, False),  # baselines shrink first
    (150, {"packforcing": 10, "window": 10, "sink_window": 10, "full": 10}, True),  # compile, top-k dropped first
])
def test_planner_shrinks_baselines_before_packforcing(budget_s, want, dropped, capsys):
    p = plan.make_plan(_PlanBench(budget_s))
    assert {k: v["real_seconds"] for k, v in p["policies"].items()} == want
    assert bool(p.get("compile_dropped")) == bool(p.get("topk_dropped")) == dropped
    assert p["estimate_total_s"] <= p["budget_s"]


def test_estimate_only_is_the_cost_model_alone(capsys):
    main(["--estimate-only", "--policies", "packforcing", "--lengths", "10,120"])
    lines = capsys.readouterr().out.splitlines()
    assert "1.419 B params" in lines[0]
    assert "packforcing     120 s:  120 blocks, last block  242.7 TFLOP" in lines[2] and "KV held    3.99 GB" in lines[2]


# ---- targets from recorded numbers (issue 18, item 4, judged on the saturated cache) ---------------------

PAPER = {"preset": "paper", "compressor": "hr+lr"}
JUDGED = ("packforcing model-only FPS >= 35", "end-to-end FPS >= 24", "time to first frame <= 0.5 s",
          "top-k scoring + mid gather + RoPE adjustment < 0.5%", "compression (every branch) < 4%",
          "packforcing KV held <= 4 GB", "GPU memory allocated after each block flat within 1%")


def _record(fps=36.0, e2e_fps=24.5, ttff=0.45, sel_ms=(0.5, 1.0, 0.3), compress_ms=15.0, kv_gb=3.987, leak=0.0):
    """A hand-written stats record: 8 blocks of 400 ms, saturation at block 3, steady from block 4; ``sel_ms`` =
    per-block top-k scoring / mid gather / RoPE ms, ``leak`` = GPU memory added by each block after saturation."""
    gb, n, sat = 1e9, 8, 3
    kv = [kv_gb * gb * min(i + 1, sat + 1) / (sat + 1) for i in range(n)]
    now = [8.6 * gb + max(0, i - sat) * leak * gb for i in range(n)]
    tk, mg, ra = sel_ms
    series = {"latency_s": [0.4] * n, "kv_bytes": kv, "allocated_now_bytes": now, "peak_bytes": [9.2 * gb] * n,
              "allocated_bytes": [5.2 * gb] * n, "host_bytes": [0.2 * gb * i for i in range(n)],
              "selections": [0] * (sat + 1) + [30] * (n - sat - 1), "topk_scoring_ms": [tk] * n, "mid_gather_ms": [mg] * n,
              "rope_adjust_ms": [ra] * n, "compress_ms": [compress_ms] * n}
    at = {"2": {"block": 1, "p50_ms": 380.0, "kv_bytes": kv[1], "allocated_now_bytes": now[1]},
          "5": {"block": 7, "p50_ms": 400.0, "kv_bytes": kv[7], "allocated_now_bytes": now[7], "host_bytes": series["host_bytes"][7]}}
    pf = {"kwargs": PAPER, "block_frames": 4, "saturation_block": sat, "blocks_done": n, "seconds_reached": 7.8125,
          "steady_from_block": sat + 1, "fps_model": fps, "p50_steady_ms": 16e3 / fps, "series": series, "at_length": at,
          "plan_at_length": {"600": {"kv_bytes": kv_gb * gb, "host_bytes": 20e9}}}
    e2e = {"mode": "priority", "blocks": 32, "kwargs": PAPER, "fps_steady": e2e_fps, "fps_overall": e2e_fps + 1,
           "steady_from_block": 19, "ttff_s": ttff}
    return {"policies": {"packforcing": pf}, "e2e": {"priority": e2e}, "backend_used": "sdpa"}


def _judge(res, lengths="2,5"):
    got = targets.evaluate(res, parser().parse_args(["--lengths", lengths]))
    judged = [t for t in got if not t["target"].startswith("(info)")]
    by = {}
    for want in JUDGED:
        hits = [t for t in judged if t["target"].startswith(want)]
        assert len(hits) == 1, (want, [t["target"] for t in judged])
        by[want] = hits[0]
    assert len(judged) == len(JUDGED)  # exactly issue 18's item 4, nothing else judged
    return by, {t["target"]: t for t in got}


def test_targets_are_issue_18_and_each_passes_on_a_record_that_meets_it():
    by, _ = _judge(_record())
    assert {k: t["pass"] for k, t in by.items()} == dict.fromkeys(JUDGED, True)
    assert by["top-k scoring + mid gather + RoPE adjustment < 0.5%"]["value"] == round(1.8 / 400, 6)  # summed, per block
    assert by["compression (every branch) < 4%"]["value"] == round(15 / 400, 6)
    assert by["packforcing model-only FPS >= 35"]["threshold"] == 35.0 and by["end-to-end FPS >= 24"]["threshold"] == 24.0
    conf = "[paper, hr+lr, archive unbounded (host), top-k 16 selecting]"
    assert all(t["target"].endswith(conf) for t in by.values())  # every line names its configuration


@pytest.mark.parametrize("change,failing", [
    ({"fps": 34.9}, "packforcing model-only FPS >= 35"),
    ({"e2e_fps": 23.9}, "end-to-end FPS >= 24"),
    ({"ttff": 0.51}, "time to first frame <= 0.5 s"),
    ({"sel_ms": (0.5, 1.6, 0.3)}, "top-k scoring + mid gather + RoPE adjustment < 0.5%"),  # 2.4 ms of 400 = 0.6%
    ({"compress_ms": 17.0}, "compression (every branch) < 4%"),  # 4.25%
    ({"kv_gb": 4.01}, "packforcing KV held <= 4 GB"),
    ({"leak": 0.03}, "GPU memory allocated after each block flat within 1%"),  # +0.12 GB over 4 blocks: 1.4%
])
def test_each_target_fails_alone_when_its_number_misses(change, failing):
    by, _ = _judge(_record(**change))
    assert {k for k, t in by.items() if t["pass"] is False} == {failing}
    assert all(t["pass"] is True for k, t in by.items() if k != failing)


def test_memory_and_latency_judged_from_saturation_not_from_the_first_length():
    by, t = _judge(_record())
    kv = by["packforcing KV held <= 4 GB"]
    assert "from saturation (block 3, 3.8 s) to 7.8 s" in kv["target"] and "blocks 3-7" in kv["note"]
    assert "planned (not measured): 600 s 3.987 GB" in kv["note"]
    flat = t["(info) per-block latency p50 after saturation: max / min <= 1.05"]
    assert flat["pass"] is None and "fewer than 2" in flat["note"]  # 2 s (block 1) is before saturation: not judged
    assert "2s 380.0 ms" in t["(info) p50 before saturation (context still growing; not judged)"]["note"]
    host = next(v for k, v in t.items() if k.startswith("(info) host archive GB at 600 s (plan"))
    assert host["value"] == 20.0


def test_targets_not_judged_when_the_run_stopped_before_saturation():
    res = _record()
    pf = res["policies"]["packforcing"]
    pf["blocks_done"] = 3
    pf["series"] = {k: v[:3] for k, v in pf["series"].items()}
    pf["at_length"] = {"2": pf["at_length"]["2"]}
    res["e2e"]["priority"]["steady_note"] = "only 3 blocks, the cache saturates at block 3"
    by, _ = _judge(res)
    for k in JUDGED:
        assert by[k]["pass"] is (True if k == "time to first frame <= 0.5 s" else None), k


def test_rejudge_the_committed_h200_paper_preset_record():
    """The first H200 run of the paper preset (HR+LR, unbounded host archive, top-k 16 selecting, 120 s rolled),
    judged by issue 18's targets: the numbers docs/perf.md quotes."""
    rec = json.loads((ROOT / "reports/perf/perf_20261202-095458.json").read_text())
    assert set(rec["policies"]["packforcing"]["series"]["selections"][-1:]) == {30}
    by, t = _judge(rec, "10,60,120,600")
    got = {k: (v["value"], v["pass"]) for k, v in by.items()}
    assert got == {
        "packforcing model-only FPS >= 35": (28.88, False), "end-to-end FPS >= 24": (21.92, False),
        "time to first frame <= 0.5 s": (0.42, True),
        "top-k scoring + mid gather + RoPE adjustment < 0.5%": (got["top-k scoring + mid gather + RoPE adjustment < 0.5%"][0], False),
        "compression (every branch) < 4%": (0.121504, False), "packforcing KV held <= 4 GB": (3.9872, True),
        "GPU memory allocated after each block flat within 1%": (0.0013, True)}
    pf = rec["policies"]["packforcing"]
    s, start = pf["series"], pf["steady_from_block"]
    ref = sorted((s["topk_scoring_ms"][i] + s["mid_gather_ms"][i] + s["rope_adjust_ms"][i]) / (s["latency_s"][i] * 1e3)
                 for i in range(start, len(s["latency_s"])))
    med = (ref[len(ref) // 2 - 1] + ref[len(ref) // 2]) / 2 if len(ref) % 2 == 0 else ref[len(ref) // 2]
    assert by["top-k scoring + mid gather + RoPE adjustment < 0.5%"]["value"] == round(med, 6) and 0.034 < med < 0.036
    assert all("[paper, hr+lr, archive unbounded (host), top-k 16 selecting]" in v["target"] for v in by.values())
    assert t["(info) per-block latency p50 after saturation: max / min <= 1.05"]["value"] == round(552.1289829999887 / 550.7768859999942, 4)


def test_rejudge_cli_prints_the_smoke_records_targets(smoke, tmp_path, capsys):
    from packforcing.bench.report import target_lines

    d, _ = smoke
    f = tmp_path / "perf_smoke.json"
    f.write_text(json.dumps(d))
    main(["--rejudge", str(f)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("perf_smoke.json: ") and out[1:] == target_lines(d["targets"])
    with pytest.raises(SystemExit) as e:
        main(["--rejudge", str(tmp_path / "missing.json")])
    assert e.value.code == 2 and "no such file" in capsys.readouterr().err


# ---- spans: the policies time themselves ---------------------------------------------------------------

def test_span_timer_categories():
    st = timing.SpanTimer(timing.Clock(torch.device("cpu")))
    # select -> gather ; shift (ring) ; compress -> shift (inside compression: not RoPE adjustment) ; move
    st.records = [["pf.select", None, 0.0, 0.010], ["pf.gather", 0, 0.001, 0.006], ["kv.shift", None, 0.020, 0.023],
                  ["pf.compress", None, 0.030, 0.040], ["kv.shift", 3, 0.031, 0.032], ["kv.move", None, 0.05, 0.0515]]
    c = st.flush()
    assert c["topk_scoring"] == pytest.approx(5.0)  # 10 ms minus the 5 ms gather
    assert c["mid_gather"] == pytest.approx(5.0)
    assert c["rope_adjust"] == pytest.approx(3.0)
    assert c["compress"] == pytest.approx(10.0)
    assert c["window_move"] == pytest.approx(1.5)
    assert c["calls"] == 6 and st.records == []


def test_policies_emit_spans_and_nothing_is_patched():
    from packforcing.cache.base import KVStore
    from packforcing.cache.packforcing import PackForcingPolicy
    from packforcing.spans import collecting
    from tests.test_perf_paths import pf_rollout, tiny_model

    before = {k: v for k, v in vars(PackForcingPolicy).items() if callable(v)}
    st = timing.SpanTimer(timing.Clock(torch.device("cpu")))
    m = tiny_model()
    with collecting(st):
        pf_rollout(m, frames=16)  # mid_capacity 3 > top_k 2: scoring runs
    names = {r[0] for r in st.records}
    assert {"pf.select", "pf.gather", "pf.compress", "kv.shift"} <= names
    assert all(r[3] is not None and r[3] >= r[2] for r in st.records)
    parents = {st.records[r[1]][0] for r in st.records if r[0] == "pf.gather" and r[1] is not None}
    assert parents == {"pf.select"}  # the per-layer gather of the selected blocks runs inside scoring
    n = len(st.records)
    pf_rollout(m, frames=16)  # no collector: nothing recorded
    assert len(st.records) == n
    assert {k: v for k, v in vars(PackForcingPolicy).items() if callable(v)} == before
    assert KVStore.shift.span_name == "kv.shift" and PackForcingPolicy._compress_span.span_name == "pf.compress"
    assert PackForcingPolicy._fused_commit_pass.span_name == "pf.commit_fused"


def test_bench_modules_are_small_and_never_branch_on_a_policy_name():
    src = sorted((ROOT / "packforcing/bench").glob("*.py"))
    assert len(src) >= 10
    for f in src:
        text = f.read_text()
        assert len(text.splitlines()) <= 400, f.name
        for bad in ('== "packforcing"', "setattr(", "__wrapped__"):
            assert bad not in text, (f.name, bad)


def test_cost_helpers_match_the_recorded_lengths():
    assert cost.block_end_seconds(0, 4) == 13 / 16 and cost.pixel_frames(0, 4) == 13 and cost.pixel_frames(1, 4) == 16
    assert cost.lkey(10.0) == "10" and cost.lkey(2.5) == "2.5"
    rows = [{"tokens_attended": t} for t in (1, 2, 3, 3, 3)]
    assert cost.saturation_block(rows) == 2
    cfg, r = get_preset("wan2.1-1.3b"), cost.ANCHOR_RATES
    f = cost.forward_flops(cfg, 6240, 27872)  # linear at 80% of 746 TFLOP/s, attention at 579, 0.19 us per token-layer
    ref = f["linear"] / (746e12 * 0.8) + f["attention"] / 579e12 + 0.19e-6 * 6240 * 30
    assert math.isclose(cost.anchor_forward_seconds(cfg, 6240, 27872, r), ref) and math.isclose(ref, 0.118, rel_tol=0.01)


def test_configuration_names_the_sync_free_gather():
    """A speed number run with gather=device says so next to it (the K/V are the same, the speed is not)."""
    res = _record()
    base = targets.configuration(res)
    res["policies"]["packforcing"]["kwargs"] = {**(res["policies"]["packforcing"].get("kwargs") or {}), "gather": "device"}
    assert targets.configuration(res) == base + ", gather on the device (sync-free)"


def test_configuration_names_the_lr_encode_engine_options():
    """An LR encode compiled or in channels-last layout (speed only) is named next to the numbers it ran."""
    res = _record()
    base = targets.configuration(res)
    pf = res["policies"]["packforcing"]
    pf["engine_policy"] = {**(pf.get("engine_policy") or {}), "lr_compile": "off", "lr_layout": "contiguous"}
    assert targets.configuration(res) == base
    pf["engine_policy"].update(lr_compile="on", lr_layout="channels_last")
    assert targets.configuration(res) == base + ", LR encode compiled, LR encode channels-last"


def _tiny_packforcing_run(tmp_path, monkeypatch, *extra: str) -> dict:
    """One CPU bench run of PackForcing alone at the tiny preset (2 s, no other section) with ``extra`` options."""
    monkeypatch.delenv("OUT", raising=False)
    torch.set_num_threads(1)
    main(["--allow-cpu", "--force-cpu", "--preset", "tiny", "--policies", "packforcing", "--lengths", "2",
          "--skip", "vae,profile,compile,plot,topk,e2e", "--backends", "sdpa", "--sweep-reps", "1",
          "--warmup-blocks", "0", *extra, "--out", str(tmp_path)])
    return json.loads(next(tmp_path.glob("perf_*.json")).read_text())


def test_fp8_opt_in_records_its_error_and_what_it_swapped(tmp_path, monkeypatch):
    d = _tiny_packforcing_run(tmp_path, monkeypatch, "--fp8", "on")
    f, cfg = d["model"]["fp8"], get_preset("tiny")
    assert d["config"]["fp8"] == "on" and f["linears"] == 8 * cfg.num_layers and f["gemm"] == "fp32-emulated"
    assert 0 < f["relative_error"] < 0.1
    assert d["policies"]["packforcing"]["blocks_done"] > 0 and not d["errors"]  # the run went through the FP8 model


def test_trace_summary_against_hand_counted_intervals():
    from packforcing.bench.trace import summarise

    kernels = [(0, 10, "triton_poi_fused_gelu"), (5, 20, "cudnn_sdpa_fprop"), (30, 40, "nvjet_sm90_tst"),
               (100, 110, "Memcpy HtoD (Pinned -> Device)")]
    host = [(20, 30, "pf.compress"), (40, 100, "cudaStreamSynchronize"), (50, 60, "aten::copy_")]
    r = summarise(kernels, host, 2, [0.5, 0.6], min_gap_us=5)
    # busy: [0, 20] + [30, 40] + [100, 110] = 40 us of a 110 us window, over 2 blocks
    assert r["window_ms_per_block"] == 0.055 and r["gpu_busy_ms_per_block"] == 0.02
    assert r["gpu_idle_ms_per_block"] == 0.035 and r["gap_ms_per_block"] == 0.035 and r["gaps_over_min"] == 2
    assert r["kernel_ms_per_block"] == {"attention": 0.0075, "copy": 0.005, "elementwise_other": 0.005, "gemm": 0.005}
    g = r["longest_gaps"][0]  # the 60 us gap first, with what bounds it and what the host did meanwhile
    assert (g["at_ms"], g["ms"], g["after"], g["before"]) == (0.04, 0.06, "nvjet_sm90_tst", "Memcpy HtoD (Pinned -> Device)")
    assert g["host"] == {"cudaStreamSynchronize": 0.06, "aten::copy_": 0.01}
    assert r["longest_gaps"][1]["host"] == {"pf.compress": 0.01}
    assert r["host_during_gaps_ms_per_block"]["cudaStreamSynchronize"] == 0.03
    # idle by gap length (10 us and 60 us) and the gaps over 5 us by what ended them (a GEMM, a copy)
    assert r["idle_ms_per_block_by_gap"] == {"5-200us": 0.035}
    assert r["gap_ms_per_block_by_next_kernel"] == {"copy": 0.03, "gemm": 0.005}
    assert [(t["name"], t["ms_per_block"], t["calls_per_block"], t["us_per_call"]) for t in r["top_kernels"]] == [
        ("cudnn_sdpa_fprop", 0.0075, 0.5, 15.0), ("triton_poi_fused_gelu", 0.005, 0.5, 10.0),
        ("nvjet_sm90_tst", 0.005, 0.5, 10.0), ("Memcpy HtoD (Pinned -> Device)", 0.005, 0.5, 10.0)]
    r = summarise(kernels, host, 2, [0.5, 0.6], min_gap_us=20)
    assert r["idle_ms_per_block_by_gap"] == {"20-200us": 0.03, "<20us": 0.005}
    assert r["gap_ms_per_block_by_next_kernel"] == {"copy": 0.03}
    assert summarise([], host, 1, [0.1])["note"].startswith("no device activity")


def test_trace_blocks_run_after_the_measured_ones(tmp_path, monkeypatch):
    d = _tiny_packforcing_run(tmp_path, monkeypatch, "--trace-blocks", "2")
    pf = d["policies"]["packforcing"]
    assert pf["status"] == "done" and not d["errors"]
    assert pf["blocks_done"] == len(pf["series"]["latency_s"]) == pf["blocks_planned"]  # traced blocks not in the series
    tr = pf["trace"]
    assert tr["blocks"] == 2 and len(tr["latency_ms_traced"]) == 2 and tr["kernels"] == 0  # no CUDA: no kernels
    assert (tmp_path / Path(tr["chrome_trace"]).name).is_file() and tr["chrome_trace"].endswith(".json.gz")


def test_bench_auto_backend_keeps_the_library_auto_unless_a_swept_one_is_clearly_faster():
    from packforcing.bench.experiments import _auto_choice

    sw = lambda **ms: {n: {"forward": {"median_ms": v}} for n, v in ms.items()}  # noqa: E731
    cuda, bf16 = torch.device("cuda"), torch.bfloat16
    # the library's auto on CUDA in bf16 is cudnn_split2 (>= 1,024 queries); SDPA 0.6% faster is noise: auto stays
    assert _auto_choice(sw(sdpa=94.4, cudnn_split2=95.0), "sdpa", cuda, bf16)[0] == "cudnn_split2"
    assert _auto_choice(sw(sdpa=90.0, cudnn_split2=95.0), "sdpa", cuda, bf16)[0] == "sdpa"  # > 2% ahead: sweep wins
    assert _auto_choice(sw(sdpa=94.4), "sdpa", cuda, bf16)[0] == "sdpa"  # the auto backend failed in the sweep
    assert _auto_choice(sw(sdpa=1.0, cudnn=0.9), "cudnn", torch.device("cpu"), torch.float32)[0] == "cudnn"
    assert _auto_choice(sw(sdpa=1.0, cudnn=0.99), "cudnn", torch.device("cpu"), torch.float32)[0] == "sdpa"


def test_forward_ab_interleaves_the_two_values_restores_the_variable_and_pairs_the_differences(monkeypatch):
    """--forward-ab NAME=A,B: two warm-ups each, then pairs in alternating order (AB, BA, ...); the variable is
    restored afterwards; medians and paired B - A differences are recorded; a malformed spec is refused."""
    import argparse
    import os
    from types import SimpleNamespace

    from packforcing.bench.__main__ import _forward_ab
    from packforcing.bench.experiments import forward_ab

    monkeypatch.setenv("PF_FFN_EPILOGUE", "on")
    seen = []

    def fwd():
        seen.append(os.environ["PF_FFN_EPILOGUE"])
        time.sleep(0.002 if seen[-1] == "off" else 0.0)
        return torch.ones(4) * (1.0 if seen[-1] == "off" else 1.01)

    b = SimpleNamespace(clock=timing.Clock(torch.device("cpu")), res={})
    forward_ab(b, fwd, None, "PF_FFN_EPILOGUE", ["off", "auto"], reps=4)
    assert seen == ["off"] * 2 + ["auto"] * 2 + ["off", "auto", "auto", "off", "off", "auto", "auto", "off"]
    assert os.environ["PF_FFN_EPILOGUE"] == "on"
    r = b.res["forward_ab"][0]
    assert r["values"] == ["off", "auto"] and len(r["ms"]["off"]) == len(r["ms"]["auto"]) == 4
    assert r["paired_diff_ms"]["median"] < 0 and r["paired_diff_ms"]["b_faster_share"] == 1.0
    assert r["ffn_epilogue"]["mode"] == "on"
    assert r["output_rel_diff"] == pytest.approx(0.01)  # the two values' outputs compared (auto's is 1% larger)
    assert _forward_ab("PF_FFN_EPILOGUE=off,auto") == ("PF_FFN_EPILOGUE", ["off", "auto"])
    for bad in ("PF_FFN_EPILOGUE=off", "HOME=a,b", "PF_X"):
        with pytest.raises(argparse.ArgumentTypeError, match="VAR=A,B"):
            _forward_ab(bad)


def test_forward_ab_of_a_stack_sets_every_switch_together_and_restores_each(monkeypatch):
    """--forward-ab PF_A+PF_B=a1+b1,a2+b2: each side sets all its switches at once (the forward sees the pair), and
    each variable is restored (or removed) afterwards; a stack whose values do not match its names is refused."""
    import argparse
    import os
    from types import SimpleNamespace

    from packforcing.bench.__main__ import _forward_ab
    from packforcing.bench.experiments import forward_ab

    monkeypatch.setenv("PF_QK_KERNEL", "triton")
    monkeypatch.delenv("PF_QKV_FUSED", raising=False)
    seen = []

    def fwd():
        seen.append((os.environ["PF_QK_KERNEL"], os.environ["PF_QKV_FUSED"]))
        return torch.ones(2)

    name, values = _forward_ab("PF_QK_KERNEL+PF_QKV_FUSED=off+off,auto+on")
    assert (name, values) == ("PF_QK_KERNEL+PF_QKV_FUSED", ["off+off", "auto+on"])
    b = SimpleNamespace(clock=timing.Clock(torch.device("cpu")), res={})
    forward_ab(b, fwd, None, name, values, reps=2)
    assert set(seen) == {("off", "off"), ("auto", "on")} and seen[:2] == [("off", "off")] * 2
    assert os.environ["PF_QK_KERNEL"] == "triton" and "PF_QKV_FUSED" not in os.environ
    assert b.res["forward_ab"][0]["env"] == "PF_QK_KERNEL+PF_QKV_FUSED"
    for bad in ("PF_QK_KERNEL+PF_QKV_FUSED=off,auto+on", "PF_QK_KERNEL+HOME=a+b,c+d"):
        with pytest.raises(argparse.ArgumentTypeError, match="VAR=A,B"):
            _forward_ab(bad)


def test_compression_of_a_fused_commit_run_adds_the_tokens_share_of_the_commit_pass():
    """With the compressed tokens fused into the commit pass, the compression span holds the compressor and the
    archive writes only: the target adds commit_ab's paired median (or is not judged without it), and the
    configuration says the pass was fused."""
    res = _record(compress_ms=10.0)
    pf = res["policies"]["packforcing"]
    pf["engine_policy"] = {"gather": "device", "select": "fused", "commit_pass": "fused"}
    by, _ = _judge(res)
    c = by["compression (every branch) < 4%"]
    assert c["pass"] is None and "commit_ab was not measured" in c["note"]
    res["commit_ab"] = {"reps": 10, "context_tokens": 27872, "paired_diff_ms": {"median": 4.0, "mean": 4.1}}
    by, _ = _judge(res)
    c = by["compression (every branch) < 4%"]
    assert c["value"] == round(10 / 400 + 4.0 / pf["p50_steady_ms"], 6) and c["pass"] is True
    assert "fused commit pass 4.00 ms" in c["note"]
    assert c["target"].endswith("top-k 16 selecting, compressed tokens fused into the commit pass]")
    res["commit_ab"]["paired_diff_ms"]["median"] = 8.0  # 2.5% + 1.8%: over 4%
    assert _judge(res)[0]["compression (every branch) < 4%"]["pass"] is False


def test_trace_reads_the_chrome_trace_by_category():
    from packforcing.bench.trace import chrome_intervals, summarise

    trace = {"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "nvjet_sm90_tst", "ts": 0, "dur": 10},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pinned -> Device)", "ts": 30, "dur": 5},
        {"ph": "X", "cat": "gpu_user_annotation", "name": "pf.compress", "ts": 0, "dur": 40},  # a span, not a kernel
        {"ph": "X", "cat": "cpu_op", "name": "aten::copy_", "ts": 12, "dur": 4},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamSynchronize", "ts": 10, "dur": 20},
        {"ph": "X", "cat": "user_annotation", "name": "pf.compress", "ts": 9, "dur": 30},
        {"ph": "i", "cat": "cpu_op", "name": "an instant", "ts": 3},  # not a complete event
        {"ph": "X", "cat": "python_function", "name": "f", "ts": 0, "dur": 50}]}
    kernels, host = chrome_intervals(trace)
    assert kernels == [(0.0, 10.0, "nvjet_sm90_tst"), (30.0, 35.0, "Memcpy HtoD (Pinned -> Device)")]
    assert [h[2] for h in host] == ["aten::copy_", "cudaStreamSynchronize", "pf.compress"]
    r = summarise(kernels, host, 1, [0.1], min_gap_us=5)
    assert r["gaps_over_min"] == 1 and r["host_during_gaps_ms_per_block"] == {
        "cudaStreamSynchronize": 0.02, "pf.compress": 0.02, "aten::copy_": 0.004}


def test_trace_span_breakdown_sums_each_spans_kernels_by_category_against_a_naive_sum():
    """Device work inside the spans' device ranges (gpu_user_annotation), per block: kernels clipped to the span,
    overlapping ranges of one name merged, by category and by kernel; checked against an all-pairs sum."""
    from packforcing.bench.trace import chrome_spans, span_breakdown

    trace = {"traceEvents": [
        {"ph": "X", "cat": "gpu_user_annotation", "name": "pf.compress", "ts": 10, "dur": 40},
        {"ph": "X", "cat": "gpu_user_annotation", "name": "pf.compress", "ts": 30, "dur": 30},  # overlaps: merged
        {"ph": "X", "cat": "gpu_user_annotation", "name": "pf.select", "ts": 100, "dur": 10},
        {"ph": "X", "cat": "user_annotation", "name": "pf.compress", "ts": 0, "dur": 500}]}  # the host's: not used
    spans = chrome_spans(trace)
    assert [s[2] for s in spans] == ["pf.compress", "pf.compress", "pf.select"]
    kernels = [(5.0, 15.0, "cudnn_generated_fort_native_sdpa"), (20.0, 30.0, "nvjet_sm90_tst_64x8"),
               (40.0, 70.0, "triton_poi_fused_add"), (101.0, 103.0, "Memcpy DtoD"), (200.0, 210.0, "nvjet_x")]
    r = span_breakdown(kernels, spans, 2)
    c = r["pf.compress"]
    assert c["span_ms_per_block"] == round(50 / 1e3 / 2, 4)  # [10, 60] merged
    assert c["kernel_ms_per_block"] == {"attention": 0.0025, "elementwise_other": 0.01, "gemm": 0.005}
    assert r["pf.select"]["kernel_ms_per_block"] == {"copy": 0.001}
    naive = sum(max(0.0, min(b, 60.0) - max(a, 10.0)) for a, b, _ in kernels)  # all pairs, one merged span
    assert sum(c["kernel_ms_per_block"].values()) == pytest.approx(naive / 1e3 / 2)
    assert list(c["top_kernels"])[0] == "triton_poi_fused_add"


def test_trace_host_overlap_sweep_equals_the_all_pairs_sum():
    from packforcing.bench.trace import summarise

    g = torch.Generator().manual_seed(0)
    starts = torch.cumsum(torch.randint(5, 40, (200,), generator=g), 0).tolist()
    kernels = [(float(a), float(a + 4), f"k{i}") for i, a in enumerate(starts)]
    hs = torch.randint(0, starts[-1], (300,), generator=g).tolist()
    host = [(float(a), float(a + 1 + (a * 7) % 90), f"h{a % 5}") for a in hs]
    r = summarise(kernels, host, 1, [0.1], min_gap_us=0.5, top=3)
    busy = sorted((a, b) for a, b, _ in kernels)
    gaps = [(busy[i][1], busy[i + 1][0]) for i in range(len(busy) - 1) if busy[i + 1][0] - busy[i][1] >= 0.5]
    naive: dict = {}
    for a, b, name in host:  # the all-pairs reference
        naive[name] = naive.get(name, 0.0) + sum(max(0.0, min(b, g1) - max(a, g0)) for g0, g1 in gaps)
    assert r["host_during_gaps_ms_per_block"] == {k: round(v / 1e3, 4) for k, v in
                                                  sorted(naive.items(), key=lambda kv: -kv[1]) if v > 0}


def test_host_buffers_stay_on_the_host_under_a_default_device():
    """The bench binds policies under ``torch.device(cuda)``: host buffers meant for pinning must say device="cpu"
    (the eighteenth session's H200 call: "Only dense CPU tensors can be pinned" turned the VAE compile off)."""
    from packforcing.cache.base import CacheSpec
    from packforcing.cache.packforcing import MidArchive, _to_device

    with torch.device("meta"):
        assert _to_device([1, 2], torch.int64, "cpu").device.type == "cpu"
        spec = CacheSpec(num_layers=2, num_heads=2, head_dim=4, token_hw=(2, 2))
        k, v = MidArchive(spec, n_c=3, chunk=2)._alloc()
    assert k.device.type == v.device.type == "cpu" and k.shape == (2, 2, 1, 3, 2, 4)


def test_policy_run_timed_by_events_keeps_its_series(tmp_path, monkeypatch):
    """--stats-timing events (on the CPU the rollout still times on the host): the series, spans and trace are those
    of a sync run; the record says which timing ran."""
    (tmp_path / "e").mkdir()
    (tmp_path / "s").mkdir()
    d = _tiny_packforcing_run(tmp_path / "e", monkeypatch, "--trace-blocks", "1")  # events: the default
    ref = _tiny_packforcing_run(tmp_path / "s", monkeypatch, "--stats-timing", "sync", "--trace-blocks", "1")
    ref = ref["policies"]["packforcing"]
    pf = d["policies"]["packforcing"]
    assert pf["status"] == "done" and not d["errors"] and (pf["stats_timing"], ref["stats_timing"]) == ("events", "sync")
    s = pf["series"]
    assert pf["blocks_done"] == len(s["latency_s"]) == len(s["compress_ms"]) == len(s["mid_copies"]) == ref["blocks_done"]
    for k in ("kv_bytes", "host_bytes", "tokens_attended", "selections", "mid_copies", "seconds"):
        assert s[k] == ref["series"][k], k  # the same bookkeeping, block by block
    assert all(x > 0 for x in s["latency_s"]) and sum(s["compress_ms"]) > 0  # spans read per block after the run
    assert [x > 0 for x in s["compress_ms"]] == [x > 0 for x in ref["series"]["compress_ms"]]
    assert pf["trace"]["blocks"] == 1 and pf["trace"]["latency_ms_traced"][0] > 0
    assert any("blocks timed by CUDA events" in t["target"] for t in d["targets"])  # the targets name the timing
