"""Typed configuration of the harness: dataclasses in Hydra's ConfigStore, YAML only overlays values.

A resolved :class:`HarnessConfig` says which model scale, which method (cache policy + sampler
schedule + B_f + checkpoint), how long the videos are, which prompts and seeds, which metrics, and
where the results go. Everything is composed here, in one function (:func:`load_config`):

1. Hydra composes the structured schema with the chosen config-group options
   (``scale=toy|wan``, ``method=<preset>``; each method preset has a per-scale overlay
   ``method_scale/<method>_<scale>`` picked by defaults-list interpolation).
2. A sweep's fixed values and default size (``preset_values``).
3. YAML overlay files (``--overlay file.yaml``) are merged on top: they may only set keys that
   exist in the schema, with values of the right type.
4. ``key=value`` overrides (Hydra override grammar) are applied in order, then the sweep's axis
   values.
5. Field constraints (``choices``, ``min``) and cross-field rules are checked.

Every failure is a :class:`~packforcing.errors.UserError` whose one-line message names the key.

Rule for the video length: one for the whole project, ``packforcing.util.latent_frames``
(``ceil(seconds * fps / 4 / B_f) * B_f``: whole blocks, rounded up).
"""

from __future__ import annotations

import copy
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence

from omegaconf import MISSING

from packforcing.errors import UserError
from packforcing.options import at_least, check_fields, choices  # noqa: F401 (re-exported for the harness)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Keys that say *where* or *how* a cell runs, never *what* it computes. They are left out of the
# cell identity hash (dotted paths into the cell config). Keep this the only list; a policy's own options of
# that kind are declared in its options dataclass (``choices(..., cosmetic=True)``, :func:`policy_cosmetic_keys`).
COSMETIC_KEYS: tuple[str, ...] = (
    "output_root",
    "launcher",
    "wandb",
    "progress",
    "device",
    "num_workers",
    "threads",
    "max_attempts",
    "sweep",
    "prompt_id",
    "metrics",  # a new metric re-scores the stored video; it does not make a new cell
    "metric_config",
    "scale.checkpoint_dir",  # where the weights live; *which* weights = file names + `tag`
    "scale.metrics",
    "scale.gpus_per_cell",
    "scale.compile_dit",  # how fast the DiT runs (compiled elementwise chains), not what it computes
    "keep_video",
)



@functools.lru_cache(maxsize=None)
def policy_cosmetic_keys(policy: str) -> tuple[str, ...]:
    """The options policy ``policy`` declares cosmetic (``choices(..., cosmetic=True)``), as keys of
    ``method.policy_kwargs``; () for a name that is not a registered policy (the preflight reports it)."""
    from packforcing.cache import load_all
    from packforcing.cache.base import POLICIES
    from packforcing.options import cosmetic_fields

    load_all()
    return cosmetic_fields(POLICIES.get(policy).Options) if policy in POLICIES else ()


# Config groups (chosen with ``group=option``); every other override sets a value.
GROUPS = ("scale", "method")

SCALES = ("toy", "wan")
LAUNCHERS = ("local", "debug", "slurm")
# Option fields: ``choices``/``at_least`` are the engine's (packforcing.options), so that a cache policy's
# options dataclass, declared once in its module, is this schema's ``method.policy_kwargs`` node as is.


@dataclass
class MethodConfig:
    """A method = cache policy + its kwargs + sampler schedule + B_f + checkpoint (``packforcing.methods``)."""

    name: str = "packforcing"
    policy: str = "packforcing"  # a registered cache policy (packforcing.cache.POLICIES)
    policy_kwargs: Any = MISSING  # the policy's options dataclass, set by the method preset
    schedule: str = "self_forcing"  # a registered sampler schedule (packforcing.sampler.SCHEDULES)
    block_frames: int = at_least(1, 4)  # B_f
    checkpoint: Optional[str] = None  # DiT weights, relative to scale.checkpoint_dir; None = toy default


@dataclass
class ScaleConfig:
    """Model scale. Relative file names are taken from ``checkpoint_dir``."""

    name: str = choices(*SCALES, default="toy")
    preset: str = choices("toy", "tiny", "wan2.1-1.3b", default="toy")  # GenerationSpec.preset
    checkpoint_dir: Optional[str] = None  # None = the toy weights shipped in packforcing/assets/
    vae_checkpoint: Optional[str] = None  # None = toy default
    text_encoder: str = "toy"  # "toy" or a umT5 directory
    dtype: str = choices("float32", "bfloat16", "float16", default="float32")
    fps: int = at_least(1, 16)
    compile_dit: str = choices("auto", "on", "off", default="auto")  # GenerationSpec.compile_dit; auto = on with CUDA
    gpus_per_cell: int = at_least(0, 0)
    metrics: List[str] = field(default_factory=list)  # default metric set at this scale


@dataclass
class PromptsConfig:
    """Where prompts come from. toyworld: ``prompt_set(n, seed)``; file: one prompt per line (UTF-8);
    inline: the list ``inline``; auto: toyworld at toy scale, file at Wan scale."""

    source: str = choices("auto", "toyworld", "file", "inline", default="auto")
    n: Optional[int] = at_least(1, 2)  # how many; None = every line of the file / inline list
    seed: int = 0  # toyworld: prompt-set seed; file: sampling seed when n < lines in the file
    file: Optional[str] = "${oc.env:PF_PROMPT_FILE,null}"
    inline: List[str] = field(default_factory=list)


@dataclass
class LauncherConfig:
    """How cells are executed: ``debug`` (in process), ``local`` (worker processes), ``slurm``."""

    name: str = choices(*LAUNCHERS, default="local")
    workers: int = at_least(1, 2)  # local: parallel worker processes (capped by GPUs when gpus_per_node > 0)
    partition: Optional[str] = None  # slurm
    gpus_per_node: int = at_least(0, "${scale.gpus_per_cell}")
    cpus_per_task: int = at_least(1, 2)
    mem_gb: float = at_least(1, 16.0)
    timeout_min: int = at_least(1, 120)
    array_parallelism: int = at_least(1, 64)
    cells_per_job: int = at_least(1, 1)  # slurm: cells handled by one array task
    max_requeue: int = at_least(0, 2)  # requeues after preemption/timeout, per job
    poll_s: float = at_least(0.05, 1.0)
    # a job that ended without its result file: how long to wait for the file (slow shared filesystems) before
    # reporting the job dead; the jobs wait at once, not one after the other (local workers: at most 1 s)
    results_grace_s: float = at_least(0.0, 15.0)
    slurm_extra: Any = field(default_factory=dict)  # extra sbatch options, e.g. {"qos": "high"}


@dataclass
class WandbConfig:
    """wandb is a mirror of the results files; offline unless WANDB_MODE says otherwise."""

    mode: str = choices("offline", "online", "disabled", default="${oc.env:WANDB_MODE,offline}")
    project: str = "packforcing"
    entity: Optional[str] = None
    dir: Optional[str] = None  # None -> <output_root>/wandb
    log_video: bool = True


#: ``tag`` of the Wan-scale rehearsal's cells (``python -m harness.rehearsal``, issue 19): they ran on RANDOM
#: stand-in weights, so the reports mark them (``reports.cells.Row.random_weights``); the one definition
RANDOM_WEIGHTS_TAG = "random-weights-rehearsal"


@dataclass
class HarnessConfig:
    """The whole configuration of a launch (one sweep or one ``run``)."""

    defaults: List[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"scale": "toy"},
            {"method": "packforcing"},
            {"method_scale@method": "${method}_${scale}"},
        ]
    )
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    sweep: str = "run"
    seconds: int = at_least(1, 60)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    seeds: List[int] = field(default_factory=lambda: [0])
    metrics: List[str] = "${scale.metrics}"  # type: ignore[assignment]
    metric_config: Any = field(default_factory=dict)  # harness.metrics settings: {"device":..., "<metric>": {...}}
    tag: str = ""  # folded into the identity: bump it when weights change under the same file names
    output_root: str = "${oc.env:PF_RESULTS,results}"
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    device: str = "auto"  # auto = cuda when available, else cpu
    threads: Optional[int] = at_least(1, None)  # torch threads per worker; None = cores / local workers
    num_workers: int = at_least(0, 0)
    progress: bool = True
    max_attempts: int = at_least(1, 2)  # a cell that failed (error) or crashed is tried this often
    keep_video: bool = True


# --------------------------------------------------------------------------------------------
# Method presets come from the engine's method table (packforcing.methods: paper Table 1 baselines,
# baselines.md §2–4), each policy's options node from the policy's own options dataclass.
# --------------------------------------------------------------------------------------------


SCALE_PRESETS: dict[str, ScaleConfig] = {
    "toy": ScaleConfig(name="toy", metrics=["systems", "toy_truth", "pixel_dynamics", "clip_drift"]),
    "wan": ScaleConfig(
        name="wan",
        preset="wan2.1-1.3b",
        checkpoint_dir="${oc.env:PF_WAN_DIR,checkpoints/wan}",
        vae_checkpoint="Wan2.1_VAE.pth",
        text_encoder="umt5-xxl",
        dtype="bfloat16",
        gpus_per_cell=1,
        metrics=["systems", "clip_drift", "vbench_long"],
    ),
}

_STORED: set[str] = set()  # what is in the ConfigStore already ("harness", method names)


def method_nodes(name: str) -> tuple["MethodConfig", dict[str, dict]]:
    """The Hydra nodes of method ``name`` of the engine's method table: the method node (Wan values, the
    policy's options dataclass as ``policy_kwargs``) and one overlay per scale (what differs there)."""
    from packforcing.cache import policy_options
    from packforcing.methods import METHODS

    m = METHODS.get(name)
    opts = policy_options(m.policy, **m.options)  # the policy's options dataclass (bad keys: one-line error)
    node = MethodConfig(name=name, policy=m.policy, policy_kwargs=opts, schedule=m.schedule)
    toy: dict = {"block_frames": m.toy_block_frames}
    if m.toy_options:
        toy["policy_kwargs"] = dict(m.toy_options)
    return node, {"wan": {"block_frames": m.block_frames, "checkpoint": m.checkpoint}, "toy": toy}


def register_configs() -> None:
    """Put the schema, the scales and every method of the method table into Hydra's ConfigStore (idempotent;
    a method registered later is added on the next call)."""
    from hydra.core.config_store import ConfigStore

    from packforcing.methods import method_names

    cs = ConfigStore.instance()
    if "harness" not in _STORED:
        cs.store(name="harness", node=HarnessConfig)
        for name, sc in SCALE_PRESETS.items():
            cs.store(group="scale", name=name, node=sc)
        _STORED.add("harness")
    for name in method_names():
        if name in _STORED:
            continue
        node, overlays = method_nodes(name)
        cs.store(group="method", name=name, node=node)
        for scale in SCALES:
            cs.store(group="method_scale", name=f"{name}_{scale}", node=overlays[scale])
        _STORED.add(name)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Override:
    """One parsed ``key=value`` override."""

    key: str
    value: Any
    text: str


def parse_overrides(items: Sequence[str]) -> list[Override]:
    """Parse ``key=value`` strings with Hydra's override grammar (no sweeps, no +/~)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    parser = OverridesParser.create()
    out = []
    for s in items:
        if "=" not in s:
            raise UserError(f"malformed override {s!r}: expected key=value (e.g. seeds=[0,1]).")
        try:
            o = parser.parse_override(s)
        except Exception as e:  # hydra's grammar errors are multi-line
            first = str(e).strip().splitlines()
            raise UserError(f"malformed override {s!r}: {first[1] if len(first) > 1 else first[0]}.") from None
        if o.type != OverrideType.CHANGE or o.package is not None:
            raise UserError(f"override {s!r}: only plain key=value is supported (no +, ~ or @package).")
        if o.is_sweep_override():
            raise UserError(f"override {s!r} is a sweep; write lists as [a,b] or declare a sweep in sweeps/.")
        out.append(Override(o.key_or_group, o.value(), s))
    return out


def _omegaconf_message(e: Exception) -> str:
    """One line from an OmegaConf/Hydra error, naming the key."""
    from omegaconf.errors import OmegaConfBaseException

    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        return "; ".join(lines[:2]) if lines else type(e).__name__
    key = getattr(cause, "full_key", None) or "?"
    msg = (getattr(cause, "msg", None) or str(cause)).strip().splitlines()[0]
    msg = msg.replace("could not be converted to", "is not a valid")
    return f"config key {key}: {msg}"


_COMPOSED: dict = {}  # group choices -> composed config (composition is the slow step)


def _compose(groups: dict[str, str]):
    """Compose schema + group options with Hydra (struct mode; free-form mappings stay open)."""
    from hydra import compose, initialize
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    register_configs()
    for g, v in groups.items():
        if g == "scale" and v not in SCALES:
            raise UserError(f"unknown scale {v!r}; choose one of {', '.join(SCALES)}.")
        if g == "method":
            from packforcing.methods import METHODS

            METHODS.get(v)  # unknown method -> did-you-mean error
    key = tuple(sorted(groups.items()))
    if key not in _COMPOSED:
        hydra_overrides = [f"{g}={v}" for g, v in groups.items()]
        try:
            if GlobalHydra.instance().is_initialized():
                composed = compose(config_name="harness", overrides=hydra_overrides)
            else:
                with initialize(version_base=None, config_path=None):
                    composed = compose(config_name="harness", overrides=hydra_overrides)
        except Exception as e:
            raise UserError(_omegaconf_message(e)) from None
        _COMPOSED[key] = composed
    cfg = copy.deepcopy(_COMPOSED[key])
    OmegaConf.set_struct(cfg, True)
    for free in (cfg.launcher.slurm_extra, cfg.metric_config):  # free-form mappings: any key
        OmegaConf.set_struct(free, False)
    return cfg


def _merge_overlays(cfg, overlays: Sequence[str]):
    """Merge YAML overlay files (only keys of the schema, values of the right type)."""
    from omegaconf import OmegaConf

    for path in overlays:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"overlay file not found: {path}.")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(p))
        except Exception as e:
            raise UserError(f"overlay {path}: {_omegaconf_message(e)}") from None
    return cfg


def _apply(cfg, key: str, value: Any, origin: str) -> None:
    from omegaconf import OmegaConf

    if key in GROUPS:
        raise UserError(f"{origin}: {key} is a config group; pass {key}=<name> on the command line.")
    try:
        OmegaConf.update(cfg, key, value, merge=True)
    except Exception as e:
        raise UserError(f"{origin}: {_omegaconf_message(e)}") from None


def load_config(
    overrides: Sequence[str] = (),
    *,
    overlays: Sequence[str] = (),
    preset_values: Iterable[tuple[str, Any]] = (),
    groups: dict[str, str] | None = None,
    axis_values: Iterable[tuple[str, Any]] = (),
    protected: Iterable[str] = (),
):
    """Build and validate one resolved config (an OmegaConf DictConfig in struct mode).

    Order (later wins): schema and group options < ``preset_values`` (a sweep's fixed values and
    default size) < YAML ``overlays`` < user ``overrides`` < ``axis_values``. A user override of a
    key listed in ``protected`` (a sweep axis) is an error.
    """
    parsed = parse_overrides(list(overrides))
    chosen = dict(groups or {})
    for o in parsed:
        if o.key in GROUPS:
            chosen[o.key] = str(o.value)
    protected = set(protected)
    for o in parsed:
        if o.key in protected:
            raise UserError(f"override {o.text!r} sets a sweep axis; the sweep sets {o.key} itself.")
    cfg = _compose({g: chosen[g] for g in GROUPS if g in chosen})
    for key, value in preset_values:
        _apply(cfg, key, value, "sweep preset")
    cfg = _merge_overlays(cfg, overlays)  # after the sweep's presets: an overlay's values win over them
    for o in parsed:
        if o.key not in GROUPS:
            _apply(cfg, o.key, o.value, f"override {o.text!r}")
    for key, value in axis_values:
        _apply(cfg, key, value, f"sweep axis {key}")
    if cfg.prompts.source == "auto":  # derived value: toyworld prompts exist only at toy scale
        cfg.prompts.source = "toyworld" if cfg.scale.name == "toy" else "file"
    validate(cfg)
    return cfg


def to_container(cfg) -> dict:
    """The resolved config as plain JSON-able Python (interpolations resolved)."""
    from omegaconf import OmegaConf

    try:
        out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as e:
        raise UserError(_omegaconf_message(e)) from None
    out.pop("defaults", None)
    return out


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate(cfg) -> None:
    """Check types, choices, ranges and cross-field rules; raise UserError naming the key."""
    from omegaconf import OmegaConf

    try:
        obj: HarnessConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except Exception as e:
        raise UserError(_omegaconf_message(e)) from None
    check_fields(obj, "")
    m = obj.method
    from packforcing.cache import POLICIES, load_all

    load_all()
    try:
        want = POLICIES.get(m.policy).Options
    except UserError as e:
        raise UserError(f"config key method.policy: {e}") from None
    if type(m.policy_kwargs) is not want:
        raise UserError(
            f"config key method.policy: policy {m.policy!r} takes {want.__name__}, but the method preset "
            f"{m.name!r} carries {type(m.policy_kwargs).__name__}; pick a method preset instead (method=...)."
        )
    from packforcing.sampler import SCHEDULES

    try:
        SCHEDULES.get(m.schedule)
    except UserError as e:
        raise UserError(f"config key method.schedule: {e}") from None
    B = m.block_frames
    m.policy_kwargs.check(B, prefix="config key method.policy_kwargs.")
    if obj.scale.name == "toy" and B != 4:
        raise UserError(f"config key method.block_frames: the toy models are trained with 4-frame blocks, got {B}.")
    if not obj.seeds:
        raise UserError("config key seeds: give at least one seed, e.g. seeds=[0].")
    p = obj.prompts
    if p.source == "file" and not p.file:
        raise UserError("config key prompts.file: prompts come from a file here: set prompts.file=<path> or "
                        "PF_PROMPT_FILE (one prompt per line, UTF-8).")
    if p.source == "inline" and not p.inline:
        raise UserError('config key prompts.inline: prompts.source=inline needs a list, e.g. prompts.inline=["a cat"].')
    if p.source == "toyworld" and obj.scale.name != "toy":
        raise UserError("config key prompts.source: toyworld prompts only exist at scale toy; use prompts.file.")
    if p.source == "toyworld" and p.n is None:
        raise UserError("config key prompts.n: toyworld prompts need a count, e.g. prompts.n=2.")
    check_name(obj.sweep, "sweep")
    # submitit writes these into `#SBATCH --key=<shlex-quoted value>` lines: anything Slurm takes (a100|h100,
    # node[01-03], a100&large, gpu:a100:2, 1-00:00:00, user@host) except what would break the line or its
    # quoting (whitespace, control characters, quotes, backslashes)
    if not isinstance(obj.launcher.slurm_extra, dict):
        raise UserError("config key launcher.slurm_extra: expected a mapping of sbatch options, e.g. {qos: high}.")
    slurm_vals = [("launcher.partition", obj.launcher.partition)]
    for k, v in obj.launcher.slurm_extra.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", str(k)):
            raise UserError(f"config key launcher.slurm_extra: {k!r} is not an sbatch option name (e.g. constraint, "
                            f"exclude, qos).")
        slurm_vals.append((f"launcher.slurm_extra.{k}", v))
    for where, v in slurm_vals:
        if v is not None and (isinstance(v, (dict, list)) or not re.fullmatch(r"[^\s\x00-\x1f\x7f'\"`\\]+", str(v))):
            raise UserError(f"config key {where}: {v!r} cannot go into an #SBATCH line (no spaces, quotes, "
                            f"backslashes or control characters; e.g. constraint=a100|h100, exclude=node[01-03]).")


def check_name(name: str, what: str) -> str:
    """A name used as a path component: letters, digits, ``_.-``; never ``..`` or a path."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name) or ".." in name:
        raise UserError(f"{what} name {name!r} is not a plain name (letters, digits, _ . -); it must not be a path.")
    return name


# --------------------------------------------------------------------------------------------
# Derived values
# --------------------------------------------------------------------------------------------


def resolve_path(path: Optional[str], base: Optional[str] = None) -> Optional[str]:
    """Absolute path: relative ones are taken from ``base`` (else the working directory)."""
    if path is None:
        return None
    p = Path(os.path.expanduser(path))
    if not p.is_absolute():
        p = Path(base) / p if base else Path.cwd() / p
    return str(p.resolve())


def weights_paths(config: dict) -> dict[str, Optional[str]]:
    """checkpoint / vae_checkpoint / text_encoder as the engine takes them (absolute or None/"toy")."""
    sc, m = config["scale"], config["method"]
    base = resolve_path(sc["checkpoint_dir"]) if sc.get("checkpoint_dir") else None
    te = sc["text_encoder"]
    ck = m.get("checkpoint")
    if ck and str(ck).startswith("toy:"):  # a shipped toy student by name; the test here keeps torch unimported otherwise
        from packforcing.pipeline import checkpoint_file

        ck = checkpoint_file(ck)
    return {
        "checkpoint": resolve_path(ck, base) if ck else None,
        "vae_checkpoint": resolve_path(sc["vae_checkpoint"], base) if sc.get("vae_checkpoint") else None,
        "text_encoder": te if te == "toy" else resolve_path(te, base),
    }


def check_weights(config: dict) -> None:
    """At Wan scale every weights file must exist before anything is launched."""
    if config["scale"]["name"] == "toy" and not config["scale"].get("checkpoint_dir"):
        return
    for key, path in weights_paths(config).items():
        if path in (None, "toy"):
            continue
        if not os.path.exists(path):
            how = {
                "checkpoint": "or name another file with method.checkpoint=<file>",
                "vae_checkpoint": "or name another file with scale.vae_checkpoint=<file>",
                "text_encoder": "or name another umT5 folder with scale.text_encoder=<dir>",
            }[key]
            raise UserError(f"{key} not found: {path} (nothing is downloaded: put it there, point "
                            f"scale.checkpoint_dir=<dir> or PF_WAN_DIR at the folder holding it, {how}).")
