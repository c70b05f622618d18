"""Wan-scale speed and memory benchmark of the cache policies: ``python -m packforcing.bench``.

GPU only. Without CUDA it prints ``skipped: no CUDA device`` and exits 0, unless ``--allow-cpu`` with
``--preset tiny`` (or ``toy``) for a smoke test. ``--estimate-only`` prints the FLOP/byte floor and the
time plan from the cost model alone (anywhere, nothing is run).

What one run measures (docs/perf.md has the definitions and the targets):

- ceilings: a bf16 8192^3 matmul and a large device-to-device copy (METHOD: measure both once);
- attention backends (sdpa / cudnn / flash / efficient): attention alone and one DiT block forward at
  PackForcing's saturated context; the fastest runs everything else (all are recorded);
- one profiled forward (kernel time by category: attention, GEMM, the rest);
- the policies, each a real ``packforcing.rollout.rollout`` (4 denoising steps + the commit pass per
  block) with random bf16 weights: ``packforcing`` (paper preset, B_f=4), ``window`` (Self-Forcing,
  21 frames, B_f=3), ``sink_window`` (LongLive, window 12, sink 3, B_f=3), ``full`` (until it runs
  out of memory), and optionally (``--topk-blocks``) a short ``packforcing_topk`` run with a bounded
  archive of ``--topk-mid-capacity`` blocks (the paper preset's own archive is unbounded, off the GPU, and top-k
  16 selects over it from block 20; only ``archive16``, mid_capacity == top_k, makes selection a no-op);
  per-block latency, KV bytes (policy stats), peak GPU memory at the lengths of interest, FPS, and
  the time inside top-k scoring / RoPE re-alignment / mid gather / compression (the spans the policies
  emit, ``packforcing.spans``, timed with CUDA events; nothing is patched);
- the streaming VAE decode alone (cudnn.benchmark off/on) and end to end: the rollout with the pipeline's
  streaming decode (``packforcing.streaming``, what ``pipeline.generate`` runs) in each decode mode
  (``overlap``: frames read one block later; ``blocking``: read at once; ``priority``: overlap with the
  rollout on a high-priority stream), time to first frame.

Output: ``<out>/perf_<stamp>.json`` (every number, environment, command line, errors per section) and
``perf_<stamp>.png``, also copied to ``$OUT`` when that is set; a summary table and PASS/FAIL per
target (issue 18, judged on the saturated cache: ``targets``) are printed last; ``--rejudge FILE``
re-judges a recorded JSON under today's targets. Each section is guarded: a failure is recorded and the run goes on, and the
JSON is rewritten after every section, so a killed run keeps what it had.

Modules: ``cost`` (the cost model, shared with ``packforcing.budget``), ``timing`` (clock, span collector),
``core`` (the run: state, guarded sections, JSON), ``plan`` (planner, floor, ``--estimate-only``), ``model``,
``experiments`` (ceilings, attention backends, profile, compile), ``policies`` (the rollouts), ``vae``,
``e2e``, ``targets``, ``report`` (plot, summary); the CLI is ``__main__``.
"""
