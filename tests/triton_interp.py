"""The CPU tests of the Triton kernels: a snippet run in Triton's interpreter (``TRITON_INTERPRET=1``) in a fresh
process (the variable is read at import), which must exit 0 and print OK."""

import os
import subprocess
import sys
import textwrap


def run_interpreted(code: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]
