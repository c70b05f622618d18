"""Failpoints for fault-injection tests (issue 10): inert unless ``PF_FAILPOINTS`` is set.

``PF_FAILPOINTS="phase@key[#n]:action,..."``: at the n-th (default 1st) ``hit(phase, key)`` in a
process whose key contains ``key``, do ``action``: ``kill`` (SIGKILL this process), ``enospc``
(raise "No space left on device"), ``nan`` (raise FloatingPointError) or ``oom`` (raise MemoryError).
Each failpoint fires once: a marker file in ``PF_FAILPOINT_DIR`` remembers it across processes, so
the re-launch that follows runs clean. Phases used: ``generate`` (after the rollout returned),
``score`` (after scoring), ``write`` (inside an atomic write, after the temp file, before the rename).
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import tempfile
from collections import Counter
from pathlib import Path

_hits: Counter = Counter()


def hit(phase: str, key: str) -> None:
    spec = os.environ.get("PF_FAILPOINTS")
    if not spec:
        return
    for item in spec.split(","):
        where, _, action = item.strip().rpartition(":")
        ph, _, sel = where.partition("@")
        sel, _, nth = sel.partition("#")
        if ph != phase or sel not in key:
            continue
        _hits[(ph, sel)] += 1
        if _hits[(ph, sel)] != int(nth or 1):
            continue
        d = Path(os.environ.get("PF_FAILPOINT_DIR", tempfile.gettempdir()))
        marker = d / ("fp-" + hashlib.sha1(item.encode()).hexdigest()[:16])
        if marker.exists():
            continue
        marker.touch()
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device (failpoint)")
        elif action == "nan":
            raise FloatingPointError("NaN injected by a failpoint")
        elif action == "oom":
            raise MemoryError("out of memory injected by a failpoint")
