"""Read offline wandb runs back (``offline-run-*/run-<id>.wandb``) without a server.

wandb writes an offline run as a LevelDB-style log of protobuf ``Record`` messages: a 7-byte header
(``:W&B``, magic, version), then 32 KiB blocks of chunks, each with a 7-byte header (crc32, length,
type: 1 full, 2 first, 3 middle, 4 last). Used by the tests and by ``wandb_sync --dry-run`` to say
what each offline run holds.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32768
HEADER = 7


@dataclass
class OfflineRun:
    """What an offline run recorded: identity, config, final summary, history rows, step metrics."""

    path: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    step_metrics: dict[str, str] = field(default_factory=dict)  # metric -> its step metric (define_metric)
    files: list[str] = field(default_factory=list)


def _chunks(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a wandb run file (no :W&B header)")
    pos, buf = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:  # zero padding up to the block end
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk
            buf = b""


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_run(run_dir: Path) -> OfflineRun:
    """Parse ``run_dir/run-*.wandb`` (an ``offline-run-*`` folder)."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb in {run_dir}")
    out = OfflineRun(run_dir)
    for chunk in _chunks(files[0].read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(chunk)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.id, out.name, out.group, out.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            out.tags = list(r.tags)
            out.config.update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            out.config.update({_key(u): json.loads(u.value_json) for u in rec.config.update})
        elif kind == "summary":
            out.summary.update({_key(u): json.loads(u.value_json) for u in rec.summary.update})
        elif kind == "history":
            out.history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "metric" and rec.metric.step_metric:
            out.step_metrics[rec.metric.name] = rec.metric.step_metric
        elif kind == "files":
            out.files += [f.path for f in rec.files.files]
    return out


def run_dirs(wandb_root: Path) -> list[Path]:
    """Every ``offline-run-*`` folder under ``<wandb_root>/wandb``."""
    base = Path(wandb_root) / "wandb"
    return sorted(base.glob("offline-run-*")) if base.is_dir() else []


def dir_run_id(d: Path) -> str:
    """The run id in an ``offline-run-<date>_<time>-<id>`` folder name (ids may contain '-')."""
    parts = d.name.split("-", 3)
    return parts[3] if len(parts) == 4 else d.name
