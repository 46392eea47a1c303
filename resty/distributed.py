"""Framework-free helpers for running Resty across processes (no torch, no tensorflow here).

Resty scales out on the frameworks' own engines: PyTorch's ``torchrun`` +
DistributedDataParallel, TensorFlow's ``tf.distribute`` (MirroredStrategy on one machine,
MultiWorkerMirroredStrategy across workers configured by ``TF_CONFIG``).  This module holds
the parts that are the same for both and need no framework:

* who am I: :func:`process_info` reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun),
  ``TF_CONFIG`` (TF workers) or ``RESTY_RANK``/``RESTY_WORLD_SIZE`` (our TF launcher);
* how work is split: :func:`shard_bounds` (a contiguous block of a global batch, so a
  distributed step sees exactly the single-process global batch, only spread over ranks) and
  :func:`split_items` (a strided share of a list of files for batch stylization);
* how processes are started: :func:`free_ports`, :func:`tf_config`, :func:`launch_torch`
  (``python -m torch.distributed.run``), :func:`launch_tf` (N subprocesses, each with its own
  ``TF_CONFIG``), :func:`launch` and :func:`relaunch_cli` (what ``resty ... --nproc N`` does).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

__all__ = ["ProcessInfo", "process_info", "is_launched_child", "shard_bounds", "split_items",
           "split_pending", "pending_targets", "free_ports", "tf_config", "launch_torch", "launch_tf", "launch",
           "relaunch_cli", "strip_option", "omp_threads_per_process", "CHILD_ENV"]

T = TypeVar("T")

#: Set in every process started by :func:`launch_torch` / :func:`launch_tf`, so a relaunched
#: CLI knows it is a worker and does not launch again.
CHILD_ENV = "RESTY_DISTRIBUTED_CHILD"


# =========================================================================== who am I
@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    source: str = "single"       # "torchrun" | "tf_config" | "resty" | "single"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    v = env.get(name)
    try:
        return int(v) if v not in (None, "") else default
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def process_info(env: Optional[Mapping[str, str]] = None) -> ProcessInfo:
    """This process's place in a distributed run, from the environment.

    torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` win; then ``TF_CONFIG`` (rank = the
    task's index among the ``chief`` and ``worker`` tasks, chief first, as TF numbers them);
    then ``RESTY_RANK``/``RESTY_WORLD_SIZE`` (set by :func:`launch_tf` for work that needs no
    collective, e.g. batch stylization).  Otherwise rank 0 of 1."""
    env = os.environ if env is None else env
    if env.get("WORLD_SIZE") not in (None, "") and env.get("RANK") not in (None, ""):
        return ProcessInfo(_int_env(env, "RANK", 0), _int_env(env, "WORLD_SIZE", 1),
                           _int_env(env, "LOCAL_RANK", 0), "torchrun")
    cfg = env.get("TF_CONFIG")
    if cfg:
        try:
            c = json.loads(cfg)
            cluster, task = c.get("cluster", {}), c.get("task", {})
            order = ["chief", "worker"]
            n = sum(len(cluster.get(t, [])) for t in order)
            ttype, tidx = task.get("type"), int(task.get("index", 0))
            if ttype in order and n > 0:
                rank = sum(len(cluster.get(t, [])) for t in order[:order.index(ttype)]) + tidx
                return ProcessInfo(rank, n, _int_env(env, "RESTY_LOCAL_RANK", 0), "tf_config")
        except (ValueError, TypeError, AttributeError):
            raise ValueError("TF_CONFIG is not valid JSON of the form "
                             '{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}') from None
    if env.get("RESTY_WORLD_SIZE") not in (None, ""):
        return ProcessInfo(_int_env(env, "RESTY_RANK", 0), _int_env(env, "RESTY_WORLD_SIZE", 1),
                           _int_env(env, "RESTY_LOCAL_RANK", 0), "resty")
    return ProcessInfo()


def is_launched_child(env: Optional[Mapping[str, str]] = None) -> bool:
    """True inside a process started by a launcher (ours, torchrun, or a TF_CONFIG worker):
    ``--nproc`` must then not launch again."""
    env = os.environ if env is None else env
    return bool(env.get(CHILD_ENV)) or process_info(env).source != "single"


# =========================================================================== splitting work
def shard_bounds(n: int, rank: int, world_size: int) -> Tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous share of ``n`` slots (sizes differ by at most
    one, the larger shares first, as ``numpy.array_split``).  A global batch of ``n`` items is
    split this way, so the union over ranks is exactly the single-process batch."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard_bounds: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    base, rem = divmod(int(n), int(world_size))
    lo = rank * base + min(rank, rem)
    return lo, lo + base + (1 if rank < rem else 0)


def split_items(items: Sequence[T], rank: int, world_size: int) -> List[T]:
    """Rank ``rank``'s share of ``items``: every ``world_size``-th item from ``rank`` (strided,
    so neighbouring, similar-sized files spread evenly).  The split depends only on the list,
    never on what exists on disk, so ranks never disagree about who owns an item."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"split_items: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return list(items[rank::world_size])


def split_pending(pairs: Sequence[Tuple[T, os.PathLike]], info: Optional[ProcessInfo] = None,
                  skip_existing: bool = True) -> Tuple[List[Tuple[T, os.PathLike]], List[Tuple[T, os.PathLike]]]:
    """This process's share of a batch job's ``(source, target)`` pairs, as ``(todo, done)``:
    ``done`` are the pairs whose target already exists (a finished output of an earlier,
    interrupted run) when ``skip_existing``, else empty.  The share is taken before looking
    at the disk (:func:`split_items`), so ranks never disagree about who owns a pair.  With
    ``info=ProcessInfo()`` (rank 0 of 1) it is the whole job: what ``resty stylize FOLDER``
    does in one process, and what the ``--nproc`` parent counts before starting workers."""
    info = process_info() if info is None else info
    mine = split_items(list(pairs), info.rank, info.world_size)
    if not skip_existing:
        return mine, []
    todo, done = [], []
    for s, t in mine:
        (done if Path(os.fspath(t)).is_file() else todo).append((s, t))   # a folder in the way is no output
    return todo, done


def pending_targets(pairs: Sequence[Tuple[T, os.PathLike]], info: Optional[ProcessInfo] = None,
                    skip_existing: bool = True) -> List[Tuple[T, os.PathLike]]:
    """This process's ``(source, target)`` pairs of a batch job, without those whose target
    already exists (a finished output of an earlier, interrupted run) when ``skip_existing``
    (the ``todo`` half of :func:`split_pending`)."""
    return split_pending(pairs, info, skip_existing)[0]


# =========================================================================== launching
def free_ports(n: int = 1, host: str = "127.0.0.1") -> List[int]:
    """``n`` distinct free TCP ports on ``host`` (bound together, then released: another
    program could still take one before it is used, which is as good as it gets)."""
    socks = []
    try:
        for _ in range(int(n)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(workers: Sequence[str], index: int, task_type: str = "worker") -> str:
    """The ``TF_CONFIG`` JSON of worker ``index`` in a cluster of ``workers`` ("host:port")."""
    if not 0 <= index < len(workers):
        raise ValueError(f"tf_config: index {index} outside a cluster of {len(workers)} worker(s)")
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": task_type, "index": int(index)}})


def _child_env(extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def _python_argv(cmd: Sequence[str]) -> List[str]:
    """``cmd`` is ``["-m", "module", args...]`` or ``["script.py", args...]``."""
    return [sys.executable, *cmd]


def launch_torch(nproc: int, cmd: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                 timeout: Optional[float] = None) -> int:
    """Run ``cmd`` (``["-m", "resty", "train", ...]`` or ``["script.py", ...]``) in ``nproc``
    local processes with ``python -m torch.distributed.run --standalone`` (torchrun: it sets
    RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT and tears the group down when one process
    fails).  Unless ``OMP_NUM_THREADS`` is set (in our environment or ``env``), each worker gets
    :func:`omp_threads_per_process`.  Returns torchrun's exit status."""
    cmd = list(cmd)
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", str(int(nproc))]
    if cmd[:1] == ["-m"]:
        run += ["-m", *cmd[1:]]
    else:
        run += cmd
    env = dict(env or {})
    if "OMP_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in env:
        # Chosen here, so torchrun neither prints its banner about it nor pins every worker
        # to one thread: the CPU cores are shared out between the workers.
        env["OMP_NUM_THREADS"] = str(omp_threads_per_process(nproc))
    return _wait([subprocess.Popen(run, env=_child_env(env))], timeout)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def omp_threads_per_process(nproc: int) -> int:
    """``OMP_NUM_THREADS`` for each of ``nproc`` local workers: this machine's usable CPU
    cores shared out between them, at least 1."""
    return max(1, _cpu_count() // max(1, int(nproc)))


def launch_tf(nproc: int, cmd: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
              collective: bool = True, timeout: Optional[float] = None,
              host: str = "127.0.0.1") -> int:
    """Run ``cmd`` in ``nproc`` local processes, TensorFlow style: each gets
    ``RESTY_RANK``/``RESTY_WORLD_SIZE``/``RESTY_LOCAL_RANK`` and, when ``collective`` (training
    with MultiWorkerMirroredStrategy), a ``TF_CONFIG`` naming all workers on free loopback
    ports.  When GPUs are listed in ``CUDA_VISIBLE_DEVICES``, worker i sees only the i-th
    (round-robin).  If one process fails the others are terminated.  Returns the first non-zero
    exit status, else 0."""
    nproc = int(nproc)
    workers = [f"{host}:{p}" for p in free_ports(nproc, host)] if collective else []
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    procs = []
    for i in range(nproc):
        e = {"RESTY_RANK": str(i), "RESTY_WORLD_SIZE": str(nproc), "RESTY_LOCAL_RANK": str(i)}
        if collective:
            e["TF_CONFIG"] = tf_config(workers, i)
        if gpus:
            e["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        if env:
            e.update(env)
        procs.append(subprocess.Popen(_python_argv(cmd), env=_child_env(e)))
    return _wait(procs, timeout)


def _wait(procs: List[subprocess.Popen], timeout: Optional[float]) -> int:
    """Wait for all; on the first failure (or timeout, or Ctrl-C / SIGTERM to us) terminate
    the rest: SIGTERM, then SIGKILL after 30 s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    rc = 0
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                rc = failed[0]
                break
            if all(c == 0 for c in codes):
                return 0
            if deadline is not None and time.monotonic() > deadline:
                rc = 124
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        rc = 130
    finally:
        _terminate([p for p in procs if p.poll() is None])
    return rc if rc >= 0 else 128 - rc     # killed by signal N -> 128 + N, like a shell


def _terminate(procs: List[subprocess.Popen], grace: float = 30.0) -> None:
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except OSError:
            pass
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(backend: str, nproc: int, cmd: Sequence[str], *, collective: bool = True,
           env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None) -> int:
    """``launch_torch`` for ``backend="torch"``, ``launch_tf`` for ``"tf"``."""
    if int(nproc) < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if backend == "torch":
        return launch_torch(nproc, cmd, env=env, timeout=timeout)
    if backend == "tf":
        return launch_tf(nproc, cmd, env=env, collective=collective, timeout=timeout)
    raise ValueError(f"backend: got {backend!r}; allowed: 'torch', 'tf'")


def relaunch_cli(backend: str, nproc: int, argv: Sequence[str], *, collective: bool = True,
                 env: Optional[Mapping[str, str]] = None) -> int:
    """What ``resty CMD ... --nproc N`` does in the parent: start N workers running
    ``python -m resty CMD ...`` (the same arguments) through the backend's launcher and return
    their exit status.  The workers see :data:`CHILD_ENV` and do the work themselves.
    ``--nproc`` is left out of their arguments (torchrun's own parser would take ``--nproc``
    for an abbreviation of its ``--nproc-per-node`` and refuse it as ambiguous).  ``env``: extra
    environment variables for the workers."""
    return launch(backend, nproc, ["-m", "resty", *strip_option(argv, "--nproc")], collective=collective,
                  env=env)


def strip_option(argv: Sequence[str], name: str) -> List[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


class SingleProcess:
    """The distributed context of a run in one process: what a backend's context offers
    (resty_torch.distributed.DistContext, resty_tf.distributed.StrategyContext), as no-ops."""
    rank = 0
    world_size = 1
    is_main = True

    def barrier(self) -> None:
        pass

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def sum_host(self, values):
        """``values`` (a NumPy array) summed over the processes: here, a float64 copy."""
        import numpy as np
        return np.array(values, np.float64)
