"""scripts/attention_by_age.py (issue 17's diagnostic): attention mass by the age of the attended key, against a
naive per-query, per-head loop over keys."""

import importlib.util
import math
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("attention_by_age", ROOT / "scripts/attention_by_age.py")
ab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ab)


def test_mass_by_age_equals_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    b, n, h, d, fps = 2, 3, 2, 8, 4.0
    pos = torch.tensor([0, 0, 3, 5, 9, 20, 40, 70, 90, 100, 100], dtype=torch.float64)  # latent frames
    cur_first = 100.0  # the current block: the last two keys
    q = torch.randn(b, n, h, d, generator=g)
    k = torch.randn(b, pos.numel(), h, d, generator=g)
    acc = ab.AgeMass(n_layers=1, fps_latent=fps)
    acc.add(0, q, k, pos, cur_first)
    t = acc.table()
    want = [0.0] * len(ab.BUCKETS)
    for bi in range(b):
        for hi in range(h):
            for ni in range(n):
                logits = [float(q[bi, ni, hi] @ k[bi, s, hi]) / math.sqrt(d) for s in range(pos.numel())]
                z = max(logits)
                e = [math.exp(x - z) for x in logits]
                for s, es in enumerate(e):
                    age = (cur_first - float(pos[s])) / fps
                    i = 0 if pos[s] >= cur_first else next(j for j, (_, lo, hi_) in enumerate(ab.BUCKETS)
                                                           if lo is not None and lo <= age <= hi_ and (age > lo or lo == 0))
                    want[i] += es / sum(e) / (b * h * n)
    assert all(abs(x - y) < 1e-6 for x, y in zip(t["mass"][0], want)), (t["mass"][0], want)  # float32 softmax
    assert abs(sum(t["mass"][0]) - 1.0) < 1e-6 and abs(sum(t["key_share"][0]) - 1.0) < 1e-9
    # key shares: 2 current, ages 2.5 s (90), 7.5 (70), 15 (40: edge of 5-15), 20 (20), 22.75, 23.75, 25, 25 s
    assert t["key_share"][0] == [2 / 11, 0.0, 1 / 11, 2 / 11, 6 / 11]


def test_spread_is_one_for_uniform_attention_and_small_for_peaked():
    b, n, h, d = 1, 2, 1, 4
    pos = torch.arange(10, dtype=torch.float64)
    acc = ab.AgeMass(n_layers=2, fps_latent=4.0)
    acc.add(0, torch.zeros(b, n, h, d), torch.randn(b, 10, h, d), pos, 9.0)  # zero queries: uniform over 10 keys
    k = torch.zeros(b, 10, h, d)
    k[0, 3, 0, 0] = 100.0
    acc.add(1, torch.ones(b, n, h, d), k, pos, 9.0)  # one key wins
    spread = acc.table()["spread"]
    assert abs(spread[0] - 1.0) < 1e-6 and spread[1] < 0.11
