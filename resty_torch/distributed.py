"""PyTorch side of distributed training: process group, DDP and the few collectives
:class:`resty_torch.FastStylizer` needs under ``torchrun``.

``FastStylizer.fit`` calls :func:`setup` itself, so a script written for one process runs
unchanged under ``torchrun --nproc-per-node N script.py``: the group is initialised from the
environment (NCCL for CUDA devices, gloo otherwise), the transformer is wrapped in
DistributedDataParallel, every rank reads its contiguous share of each *global* batch
(``resty.distributed.shard_bounds``), and the small per-step bookkeeping (which slots were
unreadable, stop requests, images seen) travels on a separate gloo group so that it never
synchronises a GPU stream.
"""
from __future__ import annotations

import atexit
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from resty.distributed import ProcessInfo, process_info

__all__ = ["DistContext", "setup", "default_device", "SINGLE"]


@dataclass
class DistContext:
    """This process's view of the run.  ``enabled`` False means one process (every method is
    then a cheap no-op and ``fit`` runs exactly its single-process code)."""
    info: ProcessInfo
    enabled: bool = False
    backend: str = ""
    meta_group: Any = None            # gloo group for CPU bookkeeping tensors
    owns_group: bool = False          # we called init_process_group (and may destroy it)

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def is_main(self) -> bool:
        return self.info.rank == 0

    def all_sum_cpu(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a small CPU tensor over ranks (gloo); returns it (in place)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.meta_group)
        return t

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a tensor on the training device over ranks (the main backend)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return bool(flag)
        return bool(self.all_sum_cpu(torch.tensor([1 if flag else 0], dtype=torch.int64))[0] > 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.meta_group)

    def sum_host(self, values) -> np.ndarray:
        """A small NumPy array summed over ranks (gloo), as float64: what the framework-free
        training sessions (resty.adain) agree on each step."""
        a = torch.from_numpy(np.array(values, np.float64))
        return self.all_sum_cpu(a).numpy()


SINGLE = DistContext(ProcessInfo())


def default_device() -> Optional[str]:
    """``cuda:LOCAL_RANK`` under torchrun when CUDA is available (one GPU per process), else
    None (the backend's usual choice)."""
    info = process_info()
    if info.source == "torchrun" and torch.cuda.is_available():
        return f"cuda:{info.local_rank % torch.cuda.device_count()}"
    return None


def setup(device: torch.device) -> DistContext:
    """The :class:`DistContext` of this process: initialises the default process group from
    torchrun's environment when it is not yet initialised (NCCL when training on CUDA, gloo
    otherwise) and a gloo group for bookkeeping.  One process -> :data:`SINGLE`."""
    info = process_info()
    if dist.is_available() and dist.is_initialized():
        info = ProcessInfo(dist.get_rank(), dist.get_world_size(), info.local_rank, "torchrun")
        if info.world_size == 1:
            return DistContext(info)
        owns = False
    else:
        if info.source != "torchrun" or info.world_size <= 1:
            return SINGLE
        if not dist.is_available():
            raise RuntimeError("torch.distributed is not available in this PyTorch build")
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        atexit.register(_destroy)
        owns = True
    backend = dist.get_backend()
    global _META
    if backend == "gloo":
        meta = None
    else:
        # new_group is collective: every rank reaches this line in the same fit call.
        if _META is None or _META[0] is not dist.group.WORLD:
            _META = (dist.group.WORLD, dist.new_group(backend="gloo"))
        meta = _META[1]
    return DistContext(info, True, backend, meta, owns)


def _destroy() -> None:
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:   # at exit, best effort
            pass


_META = None   # (default group, its gloo companion), created once per process group
