"""Systems metrics on synthetic rollout stats with known answers."""

import dataclasses

import pytest

from harness.metrics import METRICS, MetricInput

BLOCK = 1000  # kv bytes per block


def _stats(n_blocks, bounded, latency=lambda i: 0.1, with_timings=True):
    blocks = []
    for i in range(n_blocks):
        held = min(i + 1, 4) * BLOCK if bounded else (i + 1) * BLOCK
        blocks.append({"index": i, "kv_bytes": held, "tokens_attended": held // 10, "latency_s": latency(i)})
    d = {"block_stats": blocks, "peak_memory_bytes": 5_000_000, "num_frames": 1 + 4 * (4 * n_blocks - 1)}
    if with_timings:
        d["timings"] = {"total_s": 12.0, "load_s": 2.0, "first_frame_s": 0.25}
    return d


def _compute(stats, **cfg):
    m = METRICS.get("systems")()
    return m.compute(MetricInput(stats=stats, config={"systems": cfg} if cfg else {}))


def test_bounded_cache_is_flat_full_cache_grows():
    b = _compute(_stats(16, bounded=True)).values
    f = _compute(_stats(16, bounded=False)).values
    assert b["kv_bytes"] == 4 * BLOCK and b["kv_flatness"] == 1.0
    assert f["kv_bytes"] == 16 * BLOCK and f["kv_bytes_final"] == 16 * BLOCK
    assert f["kv_flatness"] == pytest.approx(16 / 9)  # second half: blocks 8..15 hold 9..16 blocks
    assert f["tokens_attended_max"] == 1600 and b["tokens_attended_max"] == 400
    assert b["tokens_attended_mean"] == pytest.approx((100 + 200 + 300 + 13 * 400) / 16)
    assert b["peak_memory_bytes"] == 5_000_000


def test_latency_percentiles_growth_and_fps():
    # block 0 is a slow warm-up (excluded); then latency grows linearly 1..15
    r = _compute(_stats(16, bounded=False, latency=lambda i: 9.0 if i == 0 else float(i)))
    v = r.values
    assert v["block_latency_p50_s"] == pytest.approx(8.0)  # median of 1..15
    assert v["block_latency_p95_s"] == pytest.approx(14.3)
    assert v["latency_growth"] == pytest.approx(14.0 / 2.0)  # p50(13,14,15) / p50(1,2,3)
    n_frames = 1 + 4 * (4 * 16 - 1)
    assert v["fps_model"] == pytest.approx(n_frames / (9.0 + sum(range(1, 16))))
    assert v["fps_e2e"] == pytest.approx(n_frames / 10.0)
    # issue 19: load_s no longer holds the prompt's encoding; the same split run gives the same fps_e2e
    split = _stats(16, bounded=False)
    split["timings"].update(load_s=1.5, text_encode_s=0.5)
    assert _compute(split).values["fps_e2e"] == pytest.approx(n_frames / 10.0)
    # issue 18: the one-off warm-up (timings.warmup_s, inside setup_s) is out of the window; absent = 0 (old records)
    warm = _stats(16, bounded=False)
    warm["timings"].update(load_s=1.5, text_encode_s=0.5, warmup_s=4.0)
    assert _compute(warm).values["fps_e2e"] == pytest.approx(n_frames / 6.0)
    assert v["first_frame_s"] == 0.25
    assert r.series["block_latency_s"][0] == 9.0 and len(r.series["kv_bytes_per_block"]) == 16
    assert len(r.records) == 16 and r.records[3]["kv_bytes"] == 4 * BLOCK
    flat = _compute(_stats(16, bounded=True)).values
    assert flat["latency_growth"] == 1.0
    assert _compute(_stats(16, bounded=False, latency=lambda i: 9.0 if i == 0 else float(i)),
                    warmup_blocks=0).values["block_latency_p50_s"] == pytest.approx(8.5)


def test_undefined_outputs_are_omitted_not_nan():
    st = _stats(3, bounded=True, with_timings=False)
    del st["peak_memory_bytes"]
    for b in st["block_stats"]:
        del b["latency_s"]
    r = _compute(st)
    for k in ("fps_e2e", "first_frame_s", "peak_memory_bytes", "fps_model", "block_latency_p50_s"):
        assert k not in r.values
    assert "block_latency_s" not in r.series and r.values["kv_bytes"] == 3 * BLOCK


def test_accepts_list_and_result_object():
    st = _stats(4, bounded=True)
    assert _compute(st["block_stats"]).values["kv_bytes"] == 4 * BLOCK  # bare block list

    @dataclasses.dataclass
    class FakeResult:
        block_stats: list
        timings: dict
        peak_memory_bytes: int
        num_frames: int
        video_path: str = "x.mp4"

    v = _compute(FakeResult(st["block_stats"], st["timings"], 7, 61)).values
    assert v["peak_memory_bytes"] == 7 and v["fps_e2e"] == pytest.approx(6.1)
