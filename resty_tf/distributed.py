"""TensorFlow side of distributed training: which ``tf.distribute`` strategy a
:class:`resty_tf.FastStylizer` uses, and the few collectives its ``fit`` needs.

* One machine, several GPUs: ``FastStylizer(..., strategy="mirrored")`` (MirroredStrategy over
  every visible GPU), or build the stylizer inside ``with strategy.scope():`` of any strategy.
* Several processes / machines: start each worker with its ``TF_CONFIG`` (``resty train
  --backend tf --nproc N`` does it on one machine); a FastStylizer then builds a
  MultiWorkerMirroredStrategy by itself.  TF requires that strategy to exist before any other
  TF operation runs in the process, so create the FastStylizer (or call :func:`resolve_strategy`)
  first thing.
* Otherwise no strategy: ``fit`` runs its single-device code.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import tensorflow as tf

from resty.distributed import process_info
from resty.errors import RestyError

__all__ = ["resolve_strategy", "should_checkpoint", "barrier", "any_replica", "world_size", "StrategyContext"]

_MWMS: Optional[tf.distribute.Strategy] = None


def resolve_strategy(strategy: Union[None, str, tf.distribute.Strategy] = None) -> Optional[tf.distribute.Strategy]:
    """``None``/``"auto"``: the strategy whose scope is active, else a MultiWorkerMirroredStrategy
    when ``TF_CONFIG`` names more than one worker (created once per process), else None.
    ``"mirrored"``: MirroredStrategy over the visible GPUs; ``"multiworker"``: MWMS from
    ``TF_CONFIG``; a Strategy object is used as given."""
    global _MWMS
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy in (None, "auto"):
        if tf.distribute.has_strategy():
            return tf.distribute.get_strategy()
        info = process_info()
        if info.source != "tf_config" or info.world_size <= 1:
            return None
        strategy = "multiworker"
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multiworker":
        if _MWMS is None:
            try:
                _MWMS = tf.distribute.MultiWorkerMirroredStrategy()
            except (RuntimeError, ValueError) as exc:
                raise RestyError(f"cannot start MultiWorkerMirroredStrategy from TF_CONFIG ({exc}); it must be "
                                 "created before any other TensorFlow operation: construct the FastStylizer "
                                 "first thing in the program") from None
        return _MWMS
    raise RestyError(f"strategy: got {strategy!r}; allowed: None, 'auto', 'mirrored', 'multiworker', "
                     "or a tf.distribute.Strategy")


def world_size(strategy: Optional[tf.distribute.Strategy]) -> int:
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def should_checkpoint(strategy: Optional[tf.distribute.Strategy]) -> bool:
    """True where checkpoints and saved models are written: the chief (worker 0) of a
    multi-worker run, and the only process otherwise."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


_BARRIERS = {}


def _sum_fn(strategy):
    fn = _BARRIERS.get(id(strategy))
    if fn is None:
        @tf.function(autograph=False)
        def fn(v):
            per = strategy.run(lambda: tf.identity(v))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per, axis=None)
        _BARRIERS[id(strategy)] = fn
    return fn


def any_replica(strategy: Optional[tf.distribute.Strategy], flag: bool) -> bool:
    """True when ``flag`` is true in any worker (a collective: every worker must call it)."""
    if strategy is None or not _multi_worker(strategy):
        return bool(flag)
    return float(_sum_fn(strategy)(tf.constant(1.0 if flag else 0.0)).numpy()) > 0


def barrier(strategy: Optional[tf.distribute.Strategy]) -> None:
    """Wait until every worker got here (a tiny all-reduce)."""
    if strategy is not None and _multi_worker(strategy):
        _sum_fn(strategy)(tf.constant(1.0)).numpy()


def _multi_worker(strategy) -> bool:
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


class StrategyContext:
    """A strategy (or None: one process) seen as resty_torch.distributed.DistContext is by the
    training driver: this process's rank, the replicas, the main process, barrier, any."""

    def __init__(self, strategy: Optional[tf.distribute.Strategy]):
        self.strategy = strategy
        self.rank = process_info().rank
        self.world_size = world_size(strategy)
        self.is_main = should_checkpoint(strategy)

    def barrier(self) -> None:
        barrier(self.strategy)

    def any(self, flag: bool) -> bool:
        return any_replica(self.strategy, flag)

    def sum_host(self, values) -> np.ndarray:
        """A small NumPy array summed over the workers (a collective: every worker must call
        it), as float64: what the framework-free training sessions (resty.adain) agree on."""
        a = np.array(values, np.float64)
        if self.strategy is None or not _multi_worker(self.strategy):
            return a
        return np.asarray(_sum_fn(self.strategy)(tf.constant(a)).numpy(), np.float64)
