"""Launchers: run the cells of a plan in process (``debug``), in worker processes (``local``) or
as a Slurm job array (``slurm``), all through submitit and the same worker callable.

- ``debug``: a loop in this process (per-block progress bars visible; pdb works).
- ``local``: submitit's LocalExecutor with ``launcher.workers`` processes, each running its share
  of the cells one after the other. A crash (segfault, OOM kill) takes down one worker, never the
  launcher; its cell stays ``running`` and the next launch re-runs it.
- ``slurm``: submitit's AutoExecutor, one array task per ``launcher.cells_per_job`` cells;
  preempted or timed-out tasks are requeued through submitit's checkpointing at most
  ``launcher.max_requeue`` times.

Idempotence: before dispatching, cells whose record is ``done`` (with every requested metric)
or ``failed`` for good are skipped; the worker re-checks under the cell's lock, so two launches
never run or write the same cell twice (a cell the other launch ran is counted as such:
``LaunchReport.ran_elsewhere``).

Stopping: local workers start with SIGINT blocked, then ignore it, so a Ctrl-C reaches only the launcher, which
then stops them itself (SIGTERM, forwarded by submitit's controller to the worker, which exits
leaving its cell ``running``: the next launch re-runs it; SIGKILL after a grace period), gives the
stopped cells their attempt back (a user's stop is not a crash) and raises :class:`LaunchInterrupted`. A launcher terminated with SIGTERM does the same for its local workers
(Slurm jobs outlive it; Ctrl-C cancels them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import submitit

from harness import config as C
from harness import store
from harness.plan import Cell, Plan
from harness.runner import NO_RETRY, Engine, made_with_current_weights, run_cells
from packforcing.errors import UserError


class CellJob(submitit.helpers.Checkpointable):
    """The worker callable: run a list of cells. Checkpointable: requeued on preemption/timeout."""

    def __init__(self, cells: list[Cell], engine: Engine = Engine(), progress: bool = False,
                 rescore: bool = False, requeues: int = 0, max_requeue: int = 2, retry_failed: bool = False,
                 exit_on_sigterm: bool = False):
        self.cells = cells
        self.engine = engine
        self.progress = progress
        self.rescore = rescore
        self.requeues = requeues
        self.max_requeue = max_requeue
        self.retry_failed = retry_failed
        self.exit_on_sigterm = exit_on_sigterm  # local workers: the launcher stops them with SIGTERM

    def __call__(self) -> list[dict]:
        if self.exit_on_sigterm:  # (submitit ignores SIGTERM in its jobs: right on Slurm, not for a local stop)
            signal.signal(signal.SIGTERM, _exit_on_signal)
            # a local worker leaves Ctrl-C to its launcher: ignore SIGINT, then take it out of the mask the
            # launcher started us with (_sigint_held; a Ctrl-C pending from the start-up is discarded)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        outs = run_cells(self.cells, self.engine, progress=self.progress, rescore=self.rescore, in_worker=True,
                         retry_failed=self.retry_failed and self.requeues == 0)
        return [dataclasses.asdict(o) for o in outs]

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on preemption/timeout; the cells' records say what is left to do."""
        if self.requeues >= self.max_requeue:
            return None  # submitit then gives up on this task: its unfinished cell stays `running`
        nxt = CellJob(self.cells, self.engine, self.progress, self.rescore, self.requeues + 1, self.max_requeue,
                      self.retry_failed, self.exit_on_sigterm)
        return submitit.helpers.DelayedSubmission(nxt, *args, **kwargs)


def _exit_on_signal(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)  # the cell's record stays `running`: the next launch re-runs it


class LaunchInterrupted(Exception):
    """The launch was stopped (Ctrl-C or SIGTERM) after stopping its local workers; ``report`` says what finished."""

    def __init__(self, report: "LaunchReport", signum: int):
        super().__init__(f"launch of {report.sweep} interrupted")
        self.report = report
        self.signum = signum


# --------------------------------------------------------------------------------------------
# What needs doing
# --------------------------------------------------------------------------------------------


def cell_state(cell: Cell, rescore: bool = False, retry_failed: bool = False) -> str:
    """``todo`` / ``done`` / ``failed`` (for good) / ``busy`` (a live process holds it)."""
    root, sweep, h = cell.config["output_root"], cell.sweep, cell.hash
    rec = store.read_json(store.cell_path(root, sweep, h))
    if rec is None:
        return "todo"
    if rec["status"] == "running":
        return "busy" if store.is_locked(root, sweep, h) else "todo"
    if rec["status"] == "done":
        if not made_with_current_weights(cell, rec):
            return "todo"  # other weights (or made before fingerprints were recorded): generate again
        have = set(rec["config"].get("metrics") or [])
        return "todo" if rescore or not set(cell.config["metrics"]) <= have else "done"
    reason = (rec.get("failure") or {}).get("reason")
    if not retry_failed and (reason in NO_RETRY or rec.get("attempts", 0) >= int(cell.config["max_attempts"])):
        return "failed"
    return "todo"


@dataclasses.dataclass
class LaunchReport:
    sweep: str
    total: int
    skipped_done: int
    skipped_failed: int
    busy: int
    dispatched: int
    counts: dict
    job_errors: list[str]
    ran_elsewhere: int = 0  # cells another launch held or ran meanwhile (busy, or done under its lock)

    @property
    def ran_here(self) -> int:
        """Cells this launch's workers ran (generated, scored or failed), not the ones another launch ran."""
        return max(0, self.dispatched - self.ran_elsewhere + self.busy)

    @property
    def ok(self) -> bool:
        """Every cell is done, or still running under another live launch's lock (that launch reports it;
        a concurrent launch that finishes first is not a failure), and no job failed."""
        return self.counts.get("done", 0) + self.counts.get("running", 0) == self.total and not self.job_errors


@contextlib.contextmanager
def _repo_on_pythonpath() -> Iterator[None]:
    """Worker processes (local or Slurm) inherit the environment: make `harness` importable there."""
    old = os.environ.get("PYTHONPATH")
    parts = [str(C.REPO_ROOT)] + ([old] if old else [])
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _shards(cells: list[Cell], n: int) -> list[list[Cell]]:
    """Round-robin into ``n`` non-empty lists (keeps each prompt's cells spread over workers)."""
    n = max(1, min(n, len(cells)))
    return [cells[i::n] for i in range(n)]


def _chunks(cells: list[Cell], k: int) -> list[list[Cell]]:
    return [cells[i : i + k] for i in range(0, len(cells), k)]


def _bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="cell", disable=not enabled,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, file=sys.stderr, dynamic_ncols=True)


def _finished(cells: list[Cell]) -> int:
    n = 0
    for c in cells:
        rec = store.read_json(store.cell_path(c.config["output_root"], c.sweep, c.hash))
        if rec is not None and rec["status"] in ("done", "failed"):
            n += 1
    return n


# Slurm job states in which the controller still holds the job (a requeued job passes through them).
_QUEUED = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
           "SUSPENDED", "RESIZING", "STAGE_OUT", "SIGNALING"}


def _still_queued(job) -> bool:
    """Whether slurmctld (``squeue``, not accounting) still holds the job; False if it cannot say."""
    try:
        p = subprocess.run(["squeue", "-h", "-j", str(job.job_id), "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and bool(set(p.stdout.split()) & _QUEUED)


def _settled(job) -> bool:
    """``job.done()``, confirmed for a Slurm job that left no result file.

    While Slurm requeues a preempted or timed-out job, accounting (which submitit's ``done()`` reads) can
    report the attempt that just ended as FAILED for a moment: the job would be counted as dead although
    it is pending again. The controller's own queue is asked then; a job it still holds is not done.
    Local and debug jobs know their process and never requeue: their ``done()`` stands.
    """
    if not job.done():
        return False
    paths = getattr(job, "paths", None)
    if paths is None or paths.result_pickle.exists() or not isinstance(job, submitit.SlurmJob):
        return True
    return not _still_queued(job)


def _has_result(job) -> bool:
    paths = getattr(job, "paths", None)
    return paths is None or paths.result_pickle.exists()


def _wait(jobs: list, todo: list[Cell], bar, poll_s: float, outcomes: list[dict], results_grace_s: float = 15.0
          ) -> list[str]:
    """Poll until every job finished, moving the bar from the store; collect the jobs' cell outcomes
    into ``outcomes``; return job-level errors. On an interrupt the jobs are left to the caller.

    A job that ended without its result file (killed, preempted for good) is given ``results_grace_s`` for the
    file to appear (a slow shared filesystem), counted from when it ended and while the other jobs are polled:
    submitit's own ``result()`` would block 15 s per dead job, one after the other."""
    errors: list[str] = []
    seen = 0
    pending = list(jobs)
    ended_at: dict[int, float] = {}  # id(job) -> when it settled without a result file
    try:
        while pending:
            time.sleep(poll_s)
            still = []
            for j in pending:
                if not _settled(j):  # (again: a requeued job's grace starts over when it ends next)
                    ended_at.pop(id(j), None)
                    still.append(j)
                    continue
                if not _has_result(j):
                    t = ended_at.setdefault(id(j), time.monotonic())
                    if time.monotonic() - t < results_grace_s:
                        still.append(j)
                        continue
                    j._results_timeout_s = 0  # the grace is spent: raise now with the job's error stream
                try:
                    outcomes.extend(j.result() or [])
                except Exception as e:  # the job died (crash, kill, not requeued)
                    first = str(e).strip().splitlines()
                    errors.append(f"job {j.job_id}: {type(e).__name__}: {first[-1] if first else ''}"[:500])
            pending = still
            now = _finished(todo)
            if now > seen:
                bar.update(now - seen)
                seen = now
    finally:
        jobs[:] = pending  # what is still running, for _stop
    now = _finished(todo)
    if now > seen:
        bar.update(now - seen)
    return errors


class _Terminated(BaseException):
    """SIGTERM reached the launcher (a BaseException, like KeyboardInterrupt: no ``except Exception`` on the
    way, e.g. the runner's around a cell in the debug launcher, may take it for a failure)."""


def _raise_terminated(signum, frame):  # noqa: ARG001
    raise _Terminated()


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    return out


def _stop(jobs: list, grace_s: float = 10.0, cancel_slurm: bool = True) -> None:
    """Stop still-running jobs: local ones by SIGTERM (the controller forwards it to the worker), then
    SIGKILL to the controller and its workers after ``grace_s``; Slurm ones by ``scancel`` if asked."""
    local = []
    for j in jobs:
        proc = getattr(j, "_process", None)
        if proc is not None:
            if proc.poll() is None:
                kids = _children(proc.pid)
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGTERM)
                local.append((proc, kids))
        elif cancel_slurm:
            with contextlib.suppress(Exception):
                j.cancel(check=False)
    deadline = time.monotonic() + grace_s
    for proc, kids in local:
        with contextlib.suppress(Exception):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for pid in [*kids, *_children(proc.pid)]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _uncount_stopped(cells: list[Cell], since: str) -> None:
    """A cell this launch started and the user stopped was not tried and lost: give its attempt back, so that
    repeated Ctrl-C never turns it into a failed ``interrupted`` cell (``max_attempts`` counts crashes)."""
    for c in cells:
        root, h = c.config["output_root"], c.hash
        path = store.cell_path(root, c.sweep, h)
        rec = store.read_json(path)
        if rec is None or rec["status"] != "running" or rec.get("created", "") < since:
            continue
        with contextlib.suppress(store.CellBusy), store.cell_lock(root, c.sweep, h):
            rec = store.read_json(path)
            if rec is not None and rec["status"] == "running" and rec.get("attempts", 0) > 0:
                rec["attempts"] -= 1
                store.write_json_atomic(path, rec)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT blocked while local workers start: they inherit it blocked (and ignore it before unblocking, in
    CellJob), while a Ctrl-C that arrives meanwhile stays pending for the launcher and reaches it when the
    block ends. (Ignoring SIGINT here instead would drop a Ctrl-C that comes during the start-up: seen in CI
    on a loaded machine, where the launch then ran to its end.)"""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Processes started inside inherit SIGINT ignored: a Ctrl-C in the terminal reaches only the launcher."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _local_gpus() -> list[int]:
    """Physical ids of the GPUs this process may use (CUDA_VISIBLE_DEVICES, else all)."""
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        items = [x.strip() for x in vis.split(",") if x.strip()]
        if all(x.isdigit() for x in items):
            return [int(x) for x in items]
    try:
        import torch

        n = torch.cuda.device_count()
    except ImportError:
        n = 0
    return list(range(n)) if vis is None else list(range(min(n, len([x for x in vis.split(",") if x.strip()]))))


def _executor(name: str, folder: Path, lcfg: dict, n_cells_per_job: int):
    if name == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=int(lcfg["timeout_min"]) * max(1, n_cells_per_job))
        return ex
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=int(lcfg["max_requeue"]))
    params: dict[str, Any] = {
        "timeout_min": int(lcfg["timeout_min"]) * max(1, n_cells_per_job),
        "cpus_per_task": int(lcfg["cpus_per_task"]),
        "mem_gb": float(lcfg["mem_gb"]),
        "slurm_array_parallelism": int(lcfg["array_parallelism"]),
        "name": f"pf-{folder.parent.name}",
    }
    if int(lcfg["gpus_per_node"]) > 0:
        params["gpus_per_node"] = int(lcfg["gpus_per_node"])
    if lcfg.get("partition"):
        params["slurm_partition"] = str(lcfg["partition"])
    extra = dict(lcfg.get("slurm_extra") or {})
    if extra:
        params["slurm_additional_parameters"] = {str(k): v for k, v in extra.items()}
    ex.update_parameters(**params)
    return ex


def launch(plan: Plan, engine: Engine = Engine(), *, launcher: Optional[str] = None, rescore: bool = False,
           progress: Optional[bool] = None, retry_failed: bool = False) -> LaunchReport:
    """Run every cell of ``plan`` that needs running; return what happened."""
    lcfg = plan.config["launcher"]
    name = launcher or lcfg["name"]
    progress = plan.config["progress"] if progress is None else progress
    sdir = store.check_writable(plan.root, plan.sweep)

    started = store.utcnow()
    states = {c.hash: cell_state(c, rescore, retry_failed) for c in plan.cells}
    todo = [c for c in plan.cells if states[c.hash] == "todo"]
    n_done = sum(s == "done" for s in states.values())
    n_failed = sum(s == "failed" for s in states.values())
    n_busy = sum(s == "busy" for s in states.values())
    bar = _bar(len(plan.cells), n_done + n_failed, plan.sweep, progress)
    errors: list[str] = []
    outcomes: list[dict] = []
    jobs: list = []
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    stopped: Optional[int] = None
    try:
        if todo and name == "debug":
            outs = run_cells(todo, engine, progress=progress, rescore=rescore, retry_failed=retry_failed,
                             on_done=lambda o: bar.update(1))
            outcomes = [dataclasses.asdict(o) for o in outs]
        elif todo and name in ("local", "slurm"):
            gpus = int(lcfg["gpus_per_node"])
            if name == "local":
                # gpus_per_node=0: the workers share every visible GPU (toy cells with device=cuda); submitit's
                # LocalExecutor would otherwise set CUDA_VISIBLE_DEVICES to the empty string and hide them all
                devices = _local_gpus()
                workers = int(lcfg["workers"])
                if gpus > 0:
                    if len(devices) < gpus:
                        raise UserError(f"launcher.gpus_per_node={gpus} but {len(devices)} GPU(s) are visible here; "
                                        f"set launcher.gpus_per_node=0 to run on CPU.")
                    workers = min(workers, len(devices) // gpus)  # one set of GPUs per worker
                groups = _shards(todo, workers)
            else:
                groups = _chunks(todo, int(lcfg["cells_per_job"]))
            ex = _executor(name, sdir / "submitit", lcfg, max(len(g) for g in groups))
            local = name == "local"

            def job(g):
                return CellJob(g, engine, progress, rescore, 0, int(lcfg["max_requeue"]), retry_failed,
                               exit_on_sigterm=local)

            with _repo_on_pythonpath(), (_sigint_held() if local and main_thread else contextlib.nullcontext()):
                if local:
                    for i, g in enumerate(groups):
                        if gpus > 0:  # LocalExecutor sets CUDA_VISIBLE_DEVICES from these ids
                            ex.update_parameters(gpus_per_node=gpus, visible_gpus=devices[i * gpus:(i + 1) * gpus])
                        elif devices:
                            ex.update_parameters(gpus_per_node=len(devices), visible_gpus=devices)
                        jobs.append(ex.submit(job(g)))
                else:
                    with ex.batch():  # one Slurm job array
                        for g in groups:
                            jobs.append(ex.submit(job(g)))
            # local workers share this filesystem: a dead worker's result file is not late, it is missing
            grace = min(1.0, float(lcfg["results_grace_s"])) if local else float(lcfg["results_grace_s"])
            errors = _wait(jobs, todo, bar, float(lcfg["poll_s"]), outcomes, grace)
        elif todo:
            raise ValueError(f"unknown launcher {name!r}")
    except KeyboardInterrupt:
        stopped = signal.SIGINT
    except _Terminated:
        stopped = signal.SIGTERM
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_term)
        bar.close()
    if stopped is not None:
        with _sigint_ignored() if main_thread else contextlib.nullcontext():  # a second Ctrl-C: still stop cleanly
            _stop(jobs, cancel_slurm=stopped == signal.SIGINT)
            _uncount_stopped(todo, started)
    counts = store.status_counts(plan.root, plan.sweep, [c.hash for c in plan.cells])
    elsewhere = n_busy + sum(o.get("action") in ("busy", "skipped") for o in outcomes)
    rep = LaunchReport(plan.sweep, len(plan.cells), n_done, n_failed, n_busy, len(todo), counts, errors, elsewhere)
    if stopped is not None:
        raise LaunchInterrupted(rep, stopped)
    return rep
