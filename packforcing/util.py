"""Small helpers written once and shared by the engine, the harness, the reports and the scripts:
video length in latent frames, atomic file writes, the repository's git sha, device resolution.

A leaf module: it imports nothing from the project but ``packforcing.errors``, and torch only
inside :func:`resolve_device`, so the harness and the reports may use it freely.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from packforcing.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
PIXEL_FRAMES_PER_LATENT = 4  # the Wan VAE's temporal compression (docs/CONTRACTS.md, "Tensors and names")


# --------------------------------------------------------------------------------------------------
# video length


def latent_frames(seconds: float, block_frames: int, fps: int = 16) -> int:
    """Latent frames for ``seconds`` of video at ``fps``, in whole blocks of B_f = ``block_frames``.

    The one rule: ``ceil(seconds * fps / 4 / B_f) * B_f``, at least one block. The Wan VAE packs 4
    pixel frames per latent frame, and the count is rounded UP to whole blocks, so the video is never
    shorter than asked: 60 s at 16 fps is 240 latent frames for B_f = 4 and for B_f = 3; 5 s is 20
    (B_f = 4) or 21 (B_f = 3); 10 s at B_f = 3 is 42.
    """
    if block_frames <= 0:
        raise UserError(f"block_frames must be positive, got {block_frames}.")
    blocks = math.ceil(seconds * fps / (PIXEL_FRAMES_PER_LATENT * block_frames))
    return max(1, blocks) * block_frames


# --------------------------------------------------------------------------------------------------
# atomic writes


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomic(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make the finished file ``tmp`` appear as ``path`` in one step: fsync ``tmp``, ``os.replace``
    it onto ``path`` (same folder, so the rename is atomic), fsync the folder. Readers see the old
    file or the whole new one, never a torn one."""
    path = Path(path)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``.<name>.<random>.tmp``) to write the file to; on a
    clean exit it replaces ``path`` atomically (:func:`replace_atomic`), on an exception it is deleted
    and ``path`` is left as it was. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        replace_atomic(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # gone after a successful replace


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, newline: bool = False, **dump_kwargs: Any) -> Path:
    """``json.dumps(obj, **dump_kwargs)`` (plus a final newline if ``newline``) written atomically."""
    return write_atomic(path, json.dumps(obj, **dump_kwargs) + ("\n" if newline else ""))


# --------------------------------------------------------------------------------------------------
# provenance and device


def optional_import(state: dict, module: str):
    """An optional accelerator module (e.g. a Triton kernel file), imported once: ``state["mod"]`` is None until tried,
    then the module or False (``state["why"]`` says why it is missing). Returns the module or None."""
    if state.get("mod") is None:
        try:
            state["mod"] = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - e.g. no triton: the caller's PyTorch path serves
            state["mod"] = False
            state["why"] = f"{module} unavailable ({type(e).__name__}: {e})"
    return state["mod"] or None


class FirstUseCheck:
    """A faster path for the same computation, trusted per (device, dtype) only after its first use there matched the
    reference on that call's own tensors: relative error (Frobenius, of each output) below ``tol``, checked outside
    CUDA-graph capture (a call during capture before any check just runs the reference). That first call returns the
    reference's result; a failed check, or an exception from the fast path, keeps the reference for good.
    ``status()``: {"device/dtype": {**extra, "relative_error", "used"} or {**extra, "error", "used": False}}."""

    def __init__(self, tol: float):
        self.tol = tol
        self.records: dict = {}

    def __call__(self, like, reference, fast, **extra):
        """``reference()`` or ``fast()`` (zero-argument callables returning a tensor or a tuple of tensors), keyed by
        the device and dtype of the tensor ``like``; ``extra``: fields recorded with the check (e.g. a split count)."""
        import torch

        key = (str(like.device), str(like.dtype).replace("torch.", ""))
        rec = self.records.get(key)
        if rec is not None:
            return fast() if rec["used"] else reference()
        if like.is_cuda and torch.cuda.is_current_stream_capturing():  # (asking on a CPU-only machine raises)
            return reference()
        ref = reference()
        try:
            out = fast()
            pairs = zip(out, ref) if isinstance(ref, tuple) else [(out, ref)]
            err = max(float(((o.float() - r.float()).norm() / r.float().norm().clamp_min(1e-12)).item())
                      for o, r in pairs)
            rec = {**extra, "relative_error": err, "used": err < self.tol}
        except Exception as e:  # noqa: BLE001 - the fast path does not build or run here: the reference for good
            rec = {**extra, "error": f"{type(e).__name__}: {str(e)[:200]}", "used": False}
        self.records[key] = rec
        return ref

    def status(self) -> dict:
        return {f"{d}/{t}": dict(r) for (d, t), r in self.records.items()}


#: every engine switch made, by its record name (``PF_QK_KERNEL`` -> ``qk_kernel``): what a run's ``engine`` record and
#: the bench's ``env`` list (:func:`packforcing.model.dit.engine_switches`, which imports every module defining one)
ENGINE_SWITCHES: dict[str, "EngineSwitch"] = {}


def engine_switch_modes() -> dict[str, str]:
    """Each switch made so far, its mode by record name (:func:`packforcing.model.dit.engine_switches` imports every
    module that makes one first)."""
    return {name: sw.mode() for name, sw in ENGINE_SWITCHES.items()}


@dataclass(frozen=True)
class EngineSwitch:
    """One engine switch: the environment variable ``PF_<NAME>``, its values (the first is the default) and, for a
    path checked at first use (``auto``), the check (:class:`FirstUseCheck`). Registered in :data:`ENGINE_SWITCHES`
    under :attr:`name` when made."""

    var: str
    modes: tuple[str, ...]
    check: FirstUseCheck | None = None

    def __post_init__(self):
        if not self.var.startswith("PF_") or self.name in ENGINE_SWITCHES:
            raise ValueError(f"engine switch {self.var!r}: needs a PF_ name not used by another switch")
        ENGINE_SWITCHES[self.name] = self

    @property
    def name(self) -> str:
        """The record name: the variable without ``PF_``, lower case."""
        return self.var[3:].lower()

    def mode(self) -> str:
        mode = os.environ.get(self.var, self.modes[0]).strip().lower() or self.modes[0]
        if mode not in self.modes:
            raise UserError(f"{self.var}={mode!r}: use one of {', '.join(self.modes)}.")
        return mode

    def status(self):
        """The mode, and with a check its records per "device/dtype" (relative error, used)."""
        return self.mode() if self.check is None else {"mode": self.mode(), **self.check.status()}


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The repository's ``HEAD`` commit (``git rev-parse HEAD``, asked once per process); ``None``
    where it cannot be known (no git, not a checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def resolve_device(name: Any = "auto", check: bool = True):
    """A ``torch.device`` from ``auto`` (or ``None``/empty: CUDA when torch sees a GPU, else CPU),
    ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``. An unknown name is a UserError; so is CUDA
    without a GPU when ``check`` (pass ``check=False`` where the device is only named, e.g. on a
    host that submits jobs to GPU nodes)."""
    import torch

    if isinstance(name, torch.device):
        return name
    name = str(name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if check and dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asks for CUDA but torch sees no GPU; use device cpu (or auto).")
    return dev


__all__ = [
    "latent_frames", "PIXEL_FRAMES_PER_LATENT", "replace_atomic", "atomic_path", "write_atomic", "write_json_atomic",
    "git_sha", "resolve_device",
]
