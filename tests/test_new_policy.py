"""Done-when of issue 21: a new cache policy is one file plus its registration.

The file below declares an option dataclass with its own option (``keep_frames``), registers a policy
and a method, and is imported from a temporary folder: nothing in harness/, budget, bench or pipeline
is edited. It then runs through the harness (``python -m harness run``'s in-process entry point, debug
launcher, a 2-block toy video) with its option overridden from the command line, and through the
budget tool (``python -m packforcing.budget``).
"""

import importlib
import json
import sys

import pytest

POLICY_FILE = '''
from dataclasses import dataclass

from packforcing.cache import PolicyOptions, register_policy
from packforcing.cache.sink_window import SinkWindowPolicy
from packforcing.methods import Method, register_method
from packforcing.options import at_least


@dataclass
class KeepLastOptions(PolicyOptions):
    """Keep the last ``keep_frames`` latent frames (current block included)."""

    keep_frames: int = at_least(1, 12)


@register_policy("test_keep_last", KeepLastOptions)
class KeepLastPolicy(SinkWindowPolicy):
    """A window of the last ``keep_frames`` frames, no sink."""

    def __init__(self, *, keep_frames: int):  # make_policy passes every field of KeepLastOptions
        super().__init__(window_frames=keep_frames, sink_frames=0, rope="absolute")


register_method(Method("test_keep_last", "test_keep_last", {"keep_frames": 12}, toy_options={"keep_frames": 8}))
'''


@pytest.fixture(scope="module")
def new_policy(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugin")
    (d / "pf_test_keep_last.py").write_text(POLICY_FILE)
    sys.path.insert(0, str(d))
    try:
        yield importlib.import_module("pf_test_keep_last")
    finally:
        sys.path.remove(str(d))


def test_new_policy_runs_through_the_harness_with_its_own_option(new_policy, tmp_path):
    from harness.cli import main

    def run(keep: int) -> dict:
        out = tmp_path / f"keep{keep}"
        rc = main(["run", "--launcher", "debug", "method=test_keep_last", f"method.policy_kwargs.keep_frames={keep}",
                   "seconds=2", "prompts.n=1", "seeds=[0]", "metrics=[systems]", f"output_root={out}",
                   "progress=false", "wandb.mode=disabled", "keep_video=false"])
        assert rc == 0
        (cell,) = (out / "run" / "cells").glob("*.json")
        return json.loads(cell.read_text())

    small, big = run(4), run(8)
    for rec, keep in ((small, 4), (big, 8)):
        assert rec["status"] == "done" and rec["method"] == "test_keep_last"
        assert rec["config"]["method"]["policy"] == "test_keep_last"
        assert rec["config"]["method"]["policy_kwargs"] == {"keep_frames": keep}
        assert rec["num_latent_frames"] == 8  # two blocks of 4 latent frames (8 x 8 tokens each)
    # the option reaches the policy: the second block attends 4 frames (window 4) or 8 (window 8)
    assert small["metrics"]["tokens_attended_max"] == 4 * 64
    assert big["metrics"]["tokens_attended_max"] == 8 * 64


def test_new_policy_runs_through_the_budget_tool(new_policy, capsys):
    from packforcing.budget import budget, main

    main(["--preset", "toy", "--policy", "test_keep_last", "--seconds", "10"])
    row = json.loads(capsys.readouterr().out)
    assert row["policy"] == "test_keep_last" and row["policy_kwargs"] == {"keep_frames": 8}  # the toy options
    assert row["active_context_tokens"] == 8 * 64 and row["stored_kv_tokens"] == 4 * 64
    wan = budget("wan2.1-1.3b", "test_keep_last", 10)
    assert wan["block_frames"] == 3 and wan["active_context_tokens"] == 12 * 1560  # Wan: B_f 3, 12 frames
    main(["--preset", "toy", "--policy", "all", "--seconds", "10"])
    assert "test_keep_last" in {r["method"] for r in json.loads(capsys.readouterr().out)}
