import sys, json, numpy as np
sys.path.insert(0, '/work/main')
from concurrent.futures import ProcessPoolExecutor

def job(pid):
    import torch; torch.set_num_threads(1)
    import packforcing.video as V
    from packforcing import toyworld as W
    from packforcing.util import latent_frames
    from packforcing.pipeline import GenerationSpec, generate
    frames = []
    class Mem:
        def __init__(self, path, fps=16, **k): pass
        def __enter__(self): return self
        def write(self, arr): frames.append(np.asarray(arr).copy())
        def __exit__(self, *a): pass
        def abort(self): pass
    prompts = W.prompt_set(32, seed=7)
    _, seed, prompt = prompts[pid]
    scene = W.sample_scene(seed)
    n = latent_frames(5, 4)
    out = {}
    for mode in ("mp4", "mem"):
        frames.clear()
        orig = V.VideoWriter
        if mode == "mem": V.VideoWriter = Mem
        path = f"/tmp/mp4cost/{pid}.mp4"
        generate(GenerationSpec(policy="window", policy_kwargs={"window_frames": 20}, checkpoint="toy:self_forcing", num_latent_frames=n, prompt=prompt, seed=pid, video_path=path))
        V.VideoWriter = orig
        v = V.read_video(path) if mode == "mp4" else np.concatenate(frames, 0)
        r = W.persistence_report(v, scene.to_dict(), fps=16, segment_s=5.0)
        out[mode] = float(r["prompt_fidelity"])
    return out

if __name__ == "__main__":
    with ProcessPoolExecutor(2) as ex:
        rows = list(ex.map(job, range(32)))
    a = np.array([r["mp4"] for r in rows]); b = np.array([r["mem"] for r in rows])
    d = b - a; rng = np.random.default_rng(0); bs = d[rng.integers(0, 32, (4000, 32))].mean(1)
    res = {"mp4": a.mean(), "mem": b.mean(), "diff": d.mean(), "ci": [np.percentile(bs, 2.5), np.percentile(bs, 97.5)], "n": 32}
    print(json.dumps(res))
