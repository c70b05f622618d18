import torch
from safetensors.torch import load_file

from packforcing.model.dit import WanDiT
from packforcing.model.presets import get_preset

FIX = "tests/fixtures/"


def tiny_model():
    m = WanDiT(get_preset("tiny")).eval()
    m.load_state_dict(load_file(FIX + "wan_dit_tiny.safetensors"), strict=True)
    return m


def test_tiny_forward_matches_upstream_with_intermediates():
    torch.manual_seed(0)
    io = load_file(FIX + "wan_dit_tiny_io.safetensors")
    m = tiny_model()
    dbg = {}
    hooks = [
        m.patch_embedding.register_forward_hook(lambda mod, i, o: dbg.__setitem__("patch_embedding_out", o)),
        m.text_embedding.register_forward_hook(lambda mod, i, o: dbg.__setitem__("text_embedding_out", o)),
        m.time_embedding.register_forward_hook(lambda mod, i, o: dbg.__setitem__("time_embedding_out", o)),
        m.time_projection.register_forward_hook(lambda mod, i, o: dbg.__setitem__("time_projection_out", o)),
        m.head.head.register_forward_hook(lambda mod, i, o: dbg.__setitem__("head_out", o)),
    ]
    for i, b in enumerate(m.blocks):
        hooks.append(b.register_forward_hook(lambda mod, inp, o, i=i: dbg.__setitem__(f"block{i}_out", o)))
    x = io["x"][None]
    with torch.no_grad():
        out = m(x, io["t"].view(1, 1).expand(1, 3), io["context"][None])[0]
    torch.testing.assert_close(out, io["output"], atol=1e-4, rtol=1e-4)
    for k, v in dbg.items():
        ref = io[f"dbg/{k}"]
        if k.startswith("time_"):  # ours is per frame (3 identical rows); upstream has one
            v = v.view(3, -1)[:1]
        torch.testing.assert_close(v.reshape(ref.shape).float(), ref, atol=1e-4, rtol=1e-4, msg=k)
    assert len(dbg) == 7
