"""From a sweep (or a single config) to the list of cells to run.

A cell = (method config, length, prompt, seed). Its identity is ``cell_hash``: 16 hex chars of the
sha256 of its canonical resolved config with the cosmetic keys (:data:`harness.config.COSMETIC_KEYS`)
removed. The cell config is the launch config with the prompt set and seed list replaced by one
prompt (text, id, toy scene) and one seed, plus ``num_latent_frames``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from harness import config as C
from harness.sweep import Sweep
from packforcing.errors import UserError


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


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def identity(cell_config: dict) -> dict:
    """The cell config minus cosmetic keys (what the hash is taken of)."""
    out = copy.deepcopy(cell_config)
    for dotted in C.COSMETIC_KEYS:
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
        raise UserError(f"prompts.n={n} but {path} has only {len(prompts)} prompts.")
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
    cfg["num_latent_frames"] = C.num_latent_frames(
        container["seconds"], container["scale"]["fps"], container["method"]["block_frames"]
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
    )
