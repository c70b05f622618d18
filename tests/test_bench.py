"""packforcing.bench: the CPU smoke run, the no-CUDA skip, and the FLOP/KV arithmetic it reports."""

import json

import pytest
import torch

from packforcing import bench
from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset

SMOKE = [
    "--allow-cpu", "--force-cpu", "--preset", "tiny", "--lengths", "2,3", "--policies", "packforcing,window",
    "--skip", "vae,profile,compile,plot", "--e2e-modes", "overlap", "--e2e-blocks", "3", "--topk-blocks", "7",
    "--topk-mid-capacity", "6", "--pf-opts", "top_k=2", "--warmup-blocks", "0", "--sweep-reps", "1",
    "--backends", "sdpa,cudnn",
]


def test_cpu_smoke_run_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OUT", raising=False)
    torch.set_num_threads(1)
    bench.main(SMOKE + ["--out", str(tmp_path)])
    files = sorted(tmp_path.glob("perf_*.json"))
    assert len(files) == 1
    d = json.loads(files[0].read_text())  # strict JSON: no NaN
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
    assert d["policies"]["window"]["block_frames"] == 3
    tk = d["policies"]["packforcing_topk"]
    assert tk["topk_blocks_scored"] >= 1 and tk["topk_scoring_share_scored"] > 0  # scoring ran and was timed
    assert d["e2e"]["overlap"]["frames"] == 13 + 16 + 16
    # 3 blocks never reach the saturated cache: the steady rate says it is optimistic
    assert d["e2e"]["overlap"]["steady_from_block"] == 1 and "cache still filling" in d["e2e"]["overlap"]["steady_note"]
    assert any(t["target"].startswith("packforcing model-only FPS") for t in d["targets"])
    out = capsys.readouterr().out
    assert "policy" in out and "[PASS]" in out or "[FAIL]" in out


def test_skips_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    bench.main([])
    assert capsys.readouterr().out.strip() == "skipped: no CUDA device"


def test_allow_cpu_needs_a_small_preset(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--allow-cpu", "--force-cpu", "--preset", "wan2.1-1.3b"])
    assert e.value.code == 2
    assert "--preset tiny" in capsys.readouterr().err


def test_flops_and_kv_at_wan_shape():
    cfg = get_preset("wan2.1-1.3b")
    f = bench.forward_flops(cfg, 6240, 27872)
    # perf-anchors.md: 1.07 TFLOP attention + 0.51 TFLOP linear per layer, 47.4 TFLOP per forward
    assert f["attention_self"] / 30 == pytest.approx(1.07e12, rel=0.01)
    assert f["linear"] / 30 == pytest.approx(0.51e12, rel=0.03)
    assert (f["attention_self"] + f["linear"]) == pytest.approx(47.4e12, rel=0.02)
    rows = bench.plan_rows(cfg, "packforcing", 4, {"preset": "paper", "compressor": "hr"}, bench.seconds_to_blocks(120, 4))
    assert rows[-1]["tokens_attended"] == 27872
    assert rows[-1]["kv_bytes"] == 21632 * 184320  # ~3.99 GB (paper.md §2)
    assert bench.seconds_to_blocks(10, 4) == 10 and bench.seconds_to_blocks(10, 3) == 14  # 42 latent frames: rounded up
    assert bench.dit_params(cfg) == pytest.approx(1.419e9, rel=1e-3)
    for name in ("tiny", "toy"):  # the formula against real modules (the Wan one is slow to build here)
        small = get_preset(name)
        assert bench.dit_params(small) == sum(p.numel() for p in WanDiT(small).parameters())


def test_hook_timer_categories():
    clock = bench.Clock(torch.device("cpu"))
    ht = bench.HookTimer(clock)
    # select -> gather -> rotate ; shift (ring) -> rotate ; compress -> rotate
    ht.records = [["select", None, 0.0, 0.010], ["gather", 0, 0.001, 0.006], ["rotate", 1, 0.002, 0.004],
                  ["shift", None, 0.020, 0.023], ["rotate", 3, 0.020, 0.022], ["compress", None, 0.030, 0.040],
                  ["rotate", 5, 0.031, 0.032]]
    c = ht.flush()
    assert c["topk_scoring"] == pytest.approx(5.0)  # 10 ms minus the 5 ms gather
    assert c["mid_gather"] == pytest.approx(3.0)  # 5 ms minus the 2 ms rotation
    assert c["rope_adjust"] == pytest.approx(3.0 + 2.0)  # ring shift + rotation of gathered keys
    assert c["compress"] == pytest.approx(10.0)
    assert ht.records == []


def test_e2e_steady_rate_counts_only_blocks_of_the_saturated_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    torch.set_num_threads(1)
    bench.main(["--allow-cpu", "--force-cpu", "--preset", "tiny", "--policies", "packforcing", "--lengths", "2",
                "--skip", "vae,profile,compile,plot,topk", "--backends", "sdpa", "--sweep-reps", "1",
                "--warmup-blocks", "0", "--e2e-modes", "overlap,priority", "--e2e-blocks", "26", "--out", str(tmp_path)])
    d = json.loads(next(tmp_path.glob("perf_*.json")).read_text())
    pf_kw = d["policies"]["packforcing"]["kwargs"]
    rows = bench.plan_rows(get_preset("tiny"), "packforcing", 4, pf_kw, 64)
    sat = bench.saturation_block(rows)
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


def test_unknown_e2e_mode_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--allow-cpu", "--force-cpu", "--preset", "tiny", "--e2e-modes", "overlapp"])
    assert e.value.code == 2
    assert "unknown end-to-end mode 'overlapp'" in capsys.readouterr().err


def _targets(res, lengths):
    class _B:  # Bench.targets reads only .res and .args
        pass

    b = _B()
    b.res, b.args = res, bench.parser().parse_args(["--lengths", lengths])
    return {t["target"]: t for t in bench.Bench.targets(b)}


def test_targets_from_a_recorded_run_one_ratio_line_and_flatness_from_saturation():
    gb = 1e9
    at = {"10": (486.0, 3.652, 26052, 9.31), "60": (512.6, 3.987, 27872, 9.31), "120": (514.9, 3.987, 27872, 9.31),
          "600": (514.0, 3.987, 27872, 9.95)}
    pf = {"at_length": {k: {"p50_ms": p, "kv_bytes": kv * gb, "allocated_bytes": 5.775 * gb, "tokens_attended": n,
                            "allocated_now_bytes": now * gb, "peak_bytes": (now + 0.37) * gb} for k, (p, kv, n, now) in at.items()},
          "fps_model": 31.1, "p50_steady_ms": 514.0, "seconds_reached": 599.8}
    t = _targets({"policies": {"packforcing": pf}, "e2e": {}}, "10,60,120,600")
    ratio = [k for k in t if "latency p50" in k and "ratio" in k or "at 120 s / at 10 s" in k]
    assert ratio == ["packforcing per-block latency p50 at 120 s / at 10 s <= 1.05"]  # no spurious 'not measured'
    r = t[ratio[0]]
    assert r["pass"] is False and r["value"] == round(514.9 / 486.0, 4) and "27872 / 26052 = 1.070" in r["note"]
    flat = t["(info) per-block latency p50 from 60 s to 600 s: max / min <= 1.05"]
    assert flat["pass"] is True and flat["value"] == round(514.9 / 512.6, 4)
    leak = t["(info) GPU memory allocated after the block flat within 1% over the lengths reached"]
    assert leak["pass"] is False and leak["value"] == round((9.95 - 9.31) / 9.95, 4)  # a leak shows here
    assert t["packforcing KV held flat within 1% from 10 s to 600 s"]["pass"] is False


def test_targets_ratio_not_measured_when_the_run_stopped_early():
    pf = {"at_length": {"10": {"p50_ms": 480.0, "kv_bytes": 3.6e9, "tokens_attended": 26052}}, "seconds_reached": 12.0}
    t = _targets({"policies": {"packforcing": pf}, "e2e": {}}, "10,120")
    assert t["packforcing per-block latency p50 ratio <= 1.05"]["pass"] is None
    assert not any("at 120 s / at 10 s" in k for k in t)


def test_targets_two_lengths_give_the_ratio_once():
    pf = {"at_length": {"10": {"p50_ms": 481.0, "kv_bytes": 3.652e9, "tokens_attended": 26052},
                        "60": {"p50_ms": 505.0, "kv_bytes": 3.987e9, "tokens_attended": 27872}}, "seconds_reached": 59.8}
    t = _targets({"policies": {"packforcing": pf}, "e2e": {}}, "10,60")
    assert [k for k in t if "latency p50" in k] == ["packforcing per-block latency p50 at 60 s / at 10 s <= 1.05"]
