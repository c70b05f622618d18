"""From a sweep (or a single config) to the list of cells to run.

A cell = (method config, length, prompt, seed). Its identity is ``cell_hash``: 16 hex chars of the
sha256 of its canonical resolved config with the cosmetic keys (:data:`harness.config.COSMETIC_KEYS`)
and the policy's own cosmetic options (:func:`harness.config.policy_cosmetic_keys`)
removed. The cell config is the launch config with the prompt set and seed list replaced by one
prompt (text, id, toy scene) and one seed, plus ``num_latent_frames``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from harness import config as C
from harness.sweep import Axis, Sweep, Variant
from packforcing.errors import UserError
from packforcing.util import latent_frames


@dataclass(frozen=True)
class Prompt:
    id: int
    text: str
    scene: Optional[dict] = None  # toy world ground truth (Scene.to_dict()), else None


@dataclass(frozen=True)
class Cell:
    """One unit of work: a resolved cell config, its hash and its axis labels."""

    sweep: str
    hash: str
    axes: dict
    config: dict

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def prompt_id(self) -> int:
        return self.config["prompt_id"]


@dataclass
class Plan:
    sweep: str
    root: str  # output root (absolute)
    config: dict  # the launch config of the first grid point (launcher, wandb, ...)
    cells: list[Cell]
    axes: tuple[str, ...]
    report: tuple[str, ...]
    points: list[tuple[dict, dict]] = dataclasses.field(default_factory=list)  # (axis labels, launch config)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def identity(cell_config: dict) -> dict:
    """The cell config minus cosmetic keys (what the hash is taken of)."""
    out = copy.deepcopy(cell_config)
    method = out.get("method")
    policy = method.get("policy") if isinstance(method, dict) else None
    cosmetic = C.COSMETIC_KEYS + tuple(f"method.policy_kwargs.{k}" for k in
                                       (C.policy_cosmetic_keys(policy) if isinstance(policy, str) else ()))
    for dotted in cosmetic:
        node = out
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def cell_hash(cell_config: dict) -> str:
    return hashlib.sha256(canonical_json(identity(cell_config)).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


def _toy_prompts(n: int, seed: int) -> list[Prompt]:
    """``toyworld.prompt_set(n, seed)`` -> prompts with their ground-truth scene dicts."""
    from packforcing import toyworld

    out = []
    for pid, scene_seed, text in toyworld.prompt_set(n, seed):
        scene = json.loads(json.dumps(toyworld.sample_scene(int(scene_seed)).to_dict()))  # plain types
        out.append(Prompt(int(pid), str(text), scene))
    return out


def _file_prompts(path: str, n: Optional[int], seed: int) -> list[Prompt]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"prompt file not found: {path} (prompts.file; one prompt per line, UTF-8).") from None
    except UnicodeDecodeError as e:
        raise UserError(f"prompt file {path} is not UTF-8 (byte {e.start}); re-save it as UTF-8.") from None
    except OSError as e:
        raise UserError(f"cannot read prompt file {path}: {e.strerror}.") from None
    lines = [ln.strip() for ln in text.splitlines()]
    prompts = [Prompt(i, t) for i, t in enumerate(ln for ln in lines if ln)]
    if not prompts:
        raise UserError(f"prompt file {path} has no prompts (one prompt per line).")
    if n is None or n == len(prompts):
        return prompts
    if n > len(prompts):
        raise UserError(f"prompts.n={n} but {path} has only {len(prompts)} prompts: set prompts.n={len(prompts)} "
                        f"(or prompts.n=null for every line), or give a longer file with prompts.file=<path>.")
    pick = sorted(random.Random(seed).sample(range(len(prompts)), n))
    return [prompts[i] for i in pick]


def load_prompts(pcfg: dict) -> list[Prompt]:
    src = pcfg["source"]
    if src == "toyworld":
        return _toy_prompts(pcfg["n"], pcfg["seed"])
    if src == "file":
        return _file_prompts(C.resolve_path(pcfg["file"]), pcfg["n"], pcfg["seed"])
    items = [Prompt(i, t) for i, t in enumerate(pcfg["inline"])]
    return items if pcfg["n"] is None else items[: pcfg["n"]]


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def output_root(container: dict) -> str:
    return str(Path(C.resolve_path(container["output_root"])))


def make_cell(container: dict, sweep: str, axes: dict, prompt: Prompt, seed: int) -> Cell:
    cfg = {k: v for k, v in container.items() if k not in ("prompts", "seeds")}
    cfg["sweep"] = sweep
    cfg["output_root"] = output_root(container)
    cfg["num_latent_frames"] = latent_frames(
        container["seconds"], block_frames=container["method"]["block_frames"], fps=container["scale"]["fps"]
    )
    cfg.update(prompt=prompt.text, prompt_id=prompt.id, seed=int(seed), toy_scene=prompt.scene)
    return Cell(sweep=sweep, hash=cell_hash(cfg), axes=dict(axes), config=cfg)


def plan(
    sweep: Optional[Sweep],
    *,
    scale: Optional[str] = None,
    overrides: Sequence[str] = (),
    overlays: Sequence[str] = (),
    name: Optional[str] = None,
    launcher: Optional[str] = None,
) -> Plan:
    """Expand a sweep (or, with ``sweep=None``, one config) into cells, in a stable order.

    Cells are ordered prompt-major within each grid point; duplicates (two grid points that
    resolve to the same identity) are kept once.
    """
    groups: dict[str, str] = {}
    preset: list[tuple[str, Any]] = []
    if scale:
        groups["scale"] = scale
    if launcher:
        preset.append(("launcher.name", launcher))
    if sweep is not None:
        sweep_name = sweep.name
        for k, v in sweep.base.items():
            if k in C.GROUPS:
                groups[k] = v
            else:
                preset.append((k, v))
    else:
        sweep_name = C.check_name(name or "run", "run")
    preset.append(("sweep", sweep_name))

    # the scale decides the sweep's axis values and default size: resolve it first
    parsed = C.parse_overrides(list(overrides))
    eff_scale = next((str(o.value) for o in reversed(parsed) if o.key == "scale"), groups.get("scale", "toy"))
    if eff_scale not in C.SCALES:
        raise UserError(f"unknown scale {eff_scale!r}; choose one of {', '.join(C.SCALES)}.")
    if sweep is not None:
        preset.extend(sweep.defaults.get(eff_scale, {}).items())
        points = list(sweep.points(eff_scale))
        protected = sweep.axis_keys(eff_scale)
    else:
        points, protected = [({}, {})], set()

    cells: list[Cell] = []
    seen: set[str] = set()
    first: Optional[dict] = None
    prompt_cache: dict[str, list[Prompt]] = {}
    point_configs: list[tuple[dict, dict]] = []
    for labels, settings in points:
        g = dict(groups)
        values = []
        for k, v in settings.items():
            if k in C.GROUPS:
                g[k] = v
            else:
                values.append((k, v))
        cfg = C.load_config(overrides, overlays=overlays, preset_values=preset, groups=g,
                            axis_values=values, protected=protected)
        container = C.to_container(cfg)
        point_configs.append((dict(labels), container))
        if first is None:
            first = container
        key = canonical_json(container["prompts"])
        if key not in prompt_cache:
            prompt_cache[key] = load_prompts(container["prompts"])
        for prompt in prompt_cache[key]:
            for seed in container["seeds"]:
                cell = make_cell(container, sweep_name, labels, prompt, seed)
                if cell.hash not in seen:
                    seen.add(cell.hash)
                    cells.append(cell)
    assert first is not None
    return Plan(
        sweep=sweep_name,
        root=output_root(first),
        config=first,
        cells=cells,
        axes=tuple(a.name for a in sweep.axes) if sweep is not None else (),
        report=tuple(sweep.report) if sweep is not None else tuple(),
        points=point_configs,
    )


# --------------------------------------------------------------------------------------------
# Hydra habits: `key=a,b` sweeps and subsets of a sweep's axis values
# --------------------------------------------------------------------------------------------


def _sweep_values(text: str) -> Optional[tuple[str, list]]:
    """``(key, values)`` when ``text`` is a Hydra sweep override (``k=a,b``, ``k=range(0,3)``), else None."""
    if "=" not in text:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        o = OverridesParser.create().parse_override(text)
    except Exception:  # not Hydra grammar: C.parse_overrides reports it with its own message
        return None
    if not o.is_sweep_override():
        return None
    try:
        values = list(o.sweep_iterator())
    except Exception:
        raise UserError(f"override {text!r}: only choice (a,b,c) and range(...) sweeps are supported.") from None
    return o.key_or_group, values


def _is_list_key(key: str) -> bool:
    """Whether ``key`` (dotted) is a list field of the schema (``seeds``, ``metrics``, ``prompts.inline``)."""
    import typing

    node: Any = C.HarnessConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            return False
        hints = typing.get_type_hints(node)
        if part not in hints:
            return False
        node = hints[part]
    return typing.get_origin(node) in (list, typing.List)


def _label_matches(label: Any, value: Any) -> bool:
    return label == value or str(label).lower() == str(value).lower()


def expand(sweep: Optional[Sweep], overrides: Sequence[str], *, scale: Optional[str] = None,
           name: Optional[str] = None) -> tuple[Optional[Sweep], list[str]]:
    """Turn Hydra-style sweep overrides into a :class:`Sweep`; return it with the plain overrides left.

    - ``key=a,b`` (or ``range(...)``) on a key that is not an axis adds an axis over those values
      (without a sweep: an ad-hoc sweep named ``name``, default ``run``), so the cells run through
      the same planner and launcher as a declared sweep;
    - ``axis=a,b`` or ``axis=a``, by axis name or config key, keeps only those values of a sweep's axis.
    """
    plain: list[str] = []
    given: list[tuple[str, list]] = []
    for text in overrides:
        sv = _sweep_values(text)
        if sv is None and sweep is not None and "=" in text:
            key = text.split("=", 1)[0]
            if any(key in (a.name, a.key) for a in sweep.axes):
                sv = (key, [C.parse_overrides([text])[0].value])
        if sv is None:
            plain.append(text)
        else:
            given.append(sv)
    if not given:
        return sweep, plain
    eff_scale = next((str(o.value) for o in reversed(C.parse_overrides(plain)) if o.key == "scale"),
                     scale or (sweep.base.get("scale") if sweep is not None else None) or "toy")
    axes = list(sweep.axes) if sweep is not None else []
    added: list[str] = []
    for key, values in given:
        if key == "scale":
            raise UserError("scale cannot be swept (its own values and sizes): run each scale with --scale.")
        if len({repr(v) for v in values}) != len(values):
            raise UserError(f"override {key}=...: a value is repeated.")
        i = next((i for i, a in enumerate(axes) if key in (a.name, a.key)), None)
        if i is None:
            if "=" in key or not key:
                raise UserError(f"malformed sweep override for {key!r}.")
            short = key.rsplit(".", 1)[-1]
            if _is_list_key(key):  # seeds=0,1 sweeps seeds=[0] and seeds=[1]
                values = [v if isinstance(v, list) else Variant(v, {key: [v]}) for v in values]
            axes.append(Axis(short if short not in {a.name for a in axes} else key, key, values=tuple(values)))
            added.append(key)
            continue
        a = axes[i]
        have = a.values_at(eff_scale)
        labels = [a.settings(v)[0] for v in have]
        bad = [v for v in values if not any(_label_matches(lb, v) for lb in labels)]
        if bad:
            raise UserError(f"{key}={','.join(map(str, bad))}: not a value of axis {a.name!r} at scale {eff_scale} "
                            f"(its values: {', '.join(map(str, labels))}).")
        keep = tuple(v for v, lb in zip(have, labels) if any(_label_matches(lb, x) for x in values))
        axes[i] = dataclasses.replace(a, values=keep, toy=keep if a.toy is not None else None)
    if sweep is None:
        sweep_name = C.check_name(name or "run", "run")
        return Sweep(name=sweep_name, title=f"ad-hoc sweep over {', '.join(added)}", axes=tuple(axes),
                     report=()), plain
    # a subset that leaves out the reference value compares with the first value kept (Sweep.reference_values)
    ref = {ax: v for ax, v in sweep.reference.items()
           if any(repr(a.settings(x)[0]) == repr(v) for a in axes if a.name == ax for s in ("toy", "wan")
                  for x in a.values_at(s))}
    return dataclasses.replace(sweep, axes=tuple(axes), reference=ref), plain
