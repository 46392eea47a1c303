"""Optimisers with the core's single definitions, ported to TensorFlow.

* :class:`TorchAdam` is ``resty.reference.adam_step`` (torch.optim.Adam's formula, or Keras's
  epsilon-hat placement when ``AdamSpec.epsilon_hat``) with its moments as ``tf.Variable``s,
  updated inside ``tf.function``.  Keras's own Adam is not used: its epsilon placement moves
  the weights by 1.8e-3 (relative) after one step even in float64 (DESIGN.md section 3).
* :func:`lbfgs_minimize` is ``resty.reference.lbfgs_minimize`` (torch.optim.LBFGS without line
  search) ported op by op.  Vectors and the history stay on the device; the scalar tests that
  steer the algorithm (``ys > 1e-10``, tolerances) are read on the host, as torch reads them.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from resty.specs import AdamSpec, LBFGSSpec

__all__ = ["TorchAdam", "lbfgs_minimize"]


class TorchAdam:
    """Adam on a fixed list of variables (``x -= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)``).

    ``apply(grads)`` is plain TF ops, safe to call inside ``tf.function``.  The bias
    corrections are computed in float64 from the step count (torch computes them as Python
    floats) and cast to each variable's dtype.
    """

    def __init__(self, spec: AdamSpec, variables: Sequence[tf.Variable], lr: Optional[float] = None):
        self.spec = spec
        self.lr = float(spec.lr if lr is None else lr)
        self.variables = list(variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="adam_step")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="exp_avg") for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="exp_avg_sq") for v in self.variables]

    def apply(self, grads: Sequence[tf.Tensor]) -> None:
        s = self.spec
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float64)
        bc1 = 1.0 - tf.pow(tf.constant(s.beta1, tf.float64), t)
        bc2 = 1.0 - tf.pow(tf.constant(s.beta2, tf.float64), t)
        for var, g, m, v in zip(self.variables, grads, self.m, self.v):
            dt = var.dtype
            g = tf.cast(g, dt)
            if s.weight_decay:
                g = g + tf.constant(s.weight_decay, dt) * var
            m.assign(tf.constant(s.beta1, dt) * m + tf.constant(1 - s.beta1, dt) * g)
            v.assign(tf.constant(s.beta2, dt) * v + tf.constant(1 - s.beta2, dt) * g * g)
            if s.epsilon_hat:
                step_size = tf.cast(self.lr * tf.sqrt(bc2) / bc1, dt)
                var.assign_sub(step_size * m / (tf.sqrt(v) + tf.constant(s.eps, dt)))
            else:
                step_size = tf.cast(self.lr / bc1, dt)
                denom = tf.sqrt(v) / tf.cast(tf.sqrt(bc2), dt) + tf.constant(s.eps, dt)
                var.assign_sub(step_size * m / denom)

    def reset(self) -> None:
        self.step.assign(0)
        for m, v in zip(self.m, self.v):
            m.assign(tf.zeros_like(m))
            v.assign(tf.zeros_like(v))

    def get_state(self) -> Dict[str, object]:
        return {"step": int(self.step.numpy()), "m": [m.numpy() for m in self.m], "v": [v.numpy() for v in self.v]}

    def set_state(self, step: int, m: Sequence[np.ndarray], v: Sequence[np.ndarray]) -> None:
        self.step.assign(int(step))
        for var, a in zip(self.m, m):
            var.assign(np.asarray(a).astype(var.dtype.as_numpy_dtype))
        for var, a in zip(self.v, v):
            var.assign(np.asarray(a).astype(var.dtype.as_numpy_dtype))


def _two_loop(flat_grad, dirs, stps, ro, start, count, h_diag):
    """L-BFGS direction from a ring-buffer history: torch's two-loop recursion.

    Logical entry ``i`` (0 = oldest) lives in row ``(start + i) % capacity``.
    """
    cap = tf.shape(dirs)[0]
    q = -flat_grad
    al = tf.TensorArray(flat_grad.dtype, size=count)

    def body1(i, q, al):
        j = (start + i) % cap
        a = tf.tensordot(stps[j], q, 1) * ro[j]
        return i - 1, q - a * dirs[j], al.write(i, a)
    _, q, al = tf.while_loop(lambda i, q, al: i >= 0, body1, (count - 1, q, al))
    d = q * h_diag

    def body2(i, d):
        j = (start + i) % cap
        be = tf.tensordot(dirs[j], d, 1) * ro[j]
        return i + 1, d + stps[j] * (al.read(i) - be)
    _, d = tf.while_loop(lambda i, d: i < count, body2, (tf.constant(0), d))
    return d


class _History:
    """The (y, s, 1/ys) pairs in preallocated device buffers (no per-iteration restacking)."""

    def __init__(self, n: int, capacity: int, dtype):
        self.cap = int(capacity)
        self.dirs = tf.Variable(tf.zeros([self.cap, n], dtype), trainable=False)
        self.stps = tf.Variable(tf.zeros([self.cap, n], dtype), trainable=False)
        self.ro = tf.Variable(tf.zeros([self.cap], dtype), trainable=False)
        self.start = 0
        self.count = 0
        # One traced function per history: a tf.Variable argument's trace is keyed on the
        # variable, not on its shape, so a module-level tf.function traced for one problem size
        # was silently reused for another (reshape error when a second Gatys run had a
        # different pixel count).  Per-instance tracing keeps the shapes static and correct.
        self._two_loop = tf.function(_two_loop, autograph=False)

    def clear(self):
        self.start = self.count = 0

    def append(self, y, s, r):
        if self.count == self.cap:          # full: drop the oldest (torch's pop(0))
            j = self.start
            self.start = (self.start + 1) % self.cap
        else:
            j = (self.start + self.count) % self.cap
            self.count += 1
        self.dirs[j].assign(y)
        self.stps[j].assign(s)
        self.ro[j].assign(r)

    def direction(self, flat_grad, h_diag):
        return self._two_loop(flat_grad, self.dirs, self.stps, self.ro, tf.constant(self.start),
                         tf.constant(self.count), h_diag)


def lbfgs_minimize(fun: Callable[[tf.Tensor], tuple], x0, spec: LBFGSSpec, max_evals: int,
                   callback: Optional[Callable[[int, float], Optional[bool]]] = None,
                   project: Optional[Callable[[tf.Tensor], tf.Tensor]] = None):
    """``resty.reference.lbfgs_minimize`` on TF tensors.

    ``fun(x) -> (loss, grad)`` with ``x`` shaped like ``x0`` (tensors on the device).
    ``callback(n_evals, loss) -> True`` stops early.  Returns ``(x, losses)`` with ``x`` a tensor
    shaped like ``x0`` and ``losses`` one float per evaluation.
    """
    if spec.line_search is not None:
        raise ValueError("lbfgs_minimize: line_search=None only (as the reference)")
    x0 = tf.convert_to_tensor(x0)
    shape = x0.shape
    dt = x0.dtype
    x = tf.reshape(x0, [-1])
    losses: List[float] = []
    stop = [False]
    d = t = None
    hist = None
    h_diag = tf.constant(1.0, dt)
    prev_flat_grad = prev_loss = None
    n_iter = 0

    def evaluate(xf):
        f, g = fun(tf.reshape(xf, shape))
        fv = float(f)
        losses.append(fv)
        if callback is not None and callback(len(losses), fv):
            stop[0] = True
        return fv, tf.reshape(tf.cast(g, dt), [-1])

    max_eval_per_step = spec.max_iter * 5 // 4
    while len(losses) < max_evals and not stop[0]:
        step_max_iter = min(spec.max_iter, max_evals - len(losses))
        loss, flat_grad = evaluate(x)
        evals = 1
        if stop[0] or float(tf.reduce_max(tf.abs(flat_grad))) <= spec.tolerance_grad:
            break
        it = 0
        while it < step_max_iter:
            it += 1
            n_iter += 1
            if n_iter == 1:
                d = -flat_grad
                if hist is None:
                    hist = _History(int(flat_grad.shape[0]), spec.history_size, dt)
                hist.clear()
                h_diag = tf.constant(1.0, dt)
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = tf.tensordot(y, s, 1)
                if float(ys) > 1e-10:
                    hist.append(y, s, 1.0 / ys)
                    h_diag = ys / tf.tensordot(y, y, 1)
                d = hist.direction(flat_grad, h_diag)
            prev_flat_grad = flat_grad
            prev_loss = loss
            if n_iter == 1:
                t = min(1.0, 1.0 / float(tf.reduce_sum(tf.abs(flat_grad)))) * spec.lr
            else:
                t = spec.lr
            gtd = float(tf.tensordot(flat_grad, d, 1))
            if gtd > -spec.tolerance_change:
                break
            x = x + t * d
            if it != step_max_iter:
                loss, flat_grad = evaluate(x)
                evals += 1
                if stop[0]:
                    break
            if it == step_max_iter or evals >= max_eval_per_step:
                break
            if float(tf.reduce_max(tf.abs(flat_grad))) <= spec.tolerance_grad:
                break
            if float(tf.reduce_max(tf.abs(d * t))) <= spec.tolerance_change:
                break
            if abs(loss - prev_loss) < spec.tolerance_change:
                break
        if project is not None:
            x = tf.reshape(tf.cast(project(tf.reshape(x, shape)), dt), [-1])
    return tf.reshape(x, shape), losses
