"""Optimisers with the core's single definitions, ported to TensorFlow.

* :class:`TorchAdam` is ``resty.reference.adam_step`` (torch.optim.Adam's formula, or Keras's
  epsilon-hat placement when ``AdamSpec.epsilon_hat``) with its moments as ``tf.Variable``s,
  updated inside ``tf.function``.  Keras's own Adam is not used: its epsilon placement moves
  the weights by 1.8e-3 (relative) after one step even in float64 (docs/ARCHITECTURE.md, pitfalls).
* :func:`lbfgs_minimize` is ``resty.reference.lbfgs_minimize`` (torch.optim.LBFGS without line
  search) ported op by op.  Vectors and the history stay on the device; the scalar tests that
  steer the algorithm (``ys > 1e-10``, tolerances) are read on the host, as torch reads them.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from resty.reference import adam_betas
from resty.specs import AdamSpec, LBFGSSpec

__all__ = ["TorchAdam", "lbfgs_minimize", "lbfgs_workspace"]


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
        b1, b2 = adam_betas(s)          # Keras (epsilon_hat): rounded to float32, as Keras does
        bc1 = 1.0 - tf.pow(tf.constant(b1, tf.float64), t)
        bc2 = 1.0 - tf.pow(tf.constant(b2, tf.float64), t)
        for var, g, m, v in zip(self.variables, grads, self.m, self.v):
            dt = var.dtype
            g = tf.cast(g, dt)
            if s.weight_decay:
                g = g + tf.constant(s.weight_decay, dt) * var
            if s.epsilon_hat:            # Keras 3's Adam.update_step, operation for operation
                m.assign_add((g - m) * tf.constant(1 - s.beta1, dt))
                v.assign_add((tf.square(g) - v) * tf.constant(1 - s.beta2, dt))
                step_size = tf.cast(self.lr * tf.sqrt(bc2) / bc1, dt)
                var.assign_sub((m * step_size) / (tf.sqrt(v) + tf.constant(s.eps, dt)))
                continue
            m.assign(tf.constant(s.beta1, dt) * m + tf.constant(1 - s.beta1, dt) * g)
            v.assign(tf.constant(s.beta2, dt) * v + tf.constant(1 - s.beta2, dt) * g * g)
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


def _two_loop(flat_grad, dirs, stps, ro, start, count, cap: int, h_diag):
    """L-BFGS direction from a ring-buffer history: torch's two-loop recursion.

    Logical entry ``i`` (0 = oldest) lives in row ``(start + i) % cap``.  ``dirs``, ``stps``,
    ``ro`` are tensors (the variables read once: reading a variable inside the loop body
    costs a read per iteration).
    """
    q = -flat_grad
    al = tf.zeros([cap], flat_grad.dtype)

    def body1(i, q, al):
        j = (start + i) % cap
        a = tf.tensordot(stps[j], q, 1) * ro[j]
        return i - 1, q - a * dirs[j], tf.tensor_scatter_nd_update(al, [[i]], [a])
    _, q, al = tf.while_loop(lambda i, q, al: i >= 0, body1, (count - 1, q, al))
    d = q * h_diag

    def body2(i, d):
        j = (start + i) % cap
        be = tf.tensordot(dirs[j], d, 1) * ro[j]
        return i + 1, d + stps[j] * (al[i] - be)
    _, d = tf.while_loop(lambda i, d: i < count, body2, (tf.constant(0), d))
    return d


class _Workspace:
    """The device state of one L-BFGS problem (``n`` unknowns, ``dtype``, history of at most
    ``history_size`` pairs in ``cap`` preallocated rows) and its traced functions, reusable
    across runs of the same size.

    Everything torch keeps in ``state`` between inner iterations (direction ``d``, step ``t``,
    previous gradient, ``H_diag``, the (y, s, 1/ys) history as a ring buffer) lives in
    ``tf.Variable``s, and one inner iteration's vector work is one ``tf.function`` call
    (:meth:`first` / :meth:`later`) returning the two scalars the host tests.  The functions
    are traced once per workspace: they close over its variables, so the shapes are static.

    A run never stores more pairs than it makes evaluations, so ``cap`` may be smaller than
    ``history_size`` (``min(history_size, max_evals)`` rows suffice, see :meth:`fits`): the
    ring drops its oldest pair when it holds ``history_size`` pairs, whatever ``cap`` is.
    """

    def __init__(self, n: int, dtype, cap: int, history_size: int, lr: float):
        self.n, self.dtype, self.lr = int(n), tf.as_dtype(dtype), float(lr)
        self.history_size = int(history_size)
        self.cap = max(1, min(int(cap), self.history_size))
        dt = self.dtype

        def var(shape, value=0):
            return tf.Variable(tf.fill(shape, tf.constant(value, dt)), trainable=False)
        self.dirs = var([self.cap, self.n])
        self.stps = var([self.cap, self.n])
        self.ro = var([self.cap])
        self.start = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.count = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.h_diag = var([], 1)
        self.d = var([self.n])
        self.t = var([])
        self.prev_g = var([self.n])
        self.first = tf.function(self._first, autograph=False)
        self.later = tf.function(self._later, autograph=False)
        self.prep = tf.function(self._prep, autograph=False)
        self.project = None

    def fits(self, n: int, dtype, spec: LBFGSSpec, max_evals: int) -> bool:
        """True when this workspace runs ``spec`` for ``max_evals`` evaluations of ``n`` unknowns."""
        return ((self.n, self.dtype, self.history_size, self.lr) ==
                (int(n), tf.as_dtype(dtype), int(spec.history_size), float(spec.lr))
                and self.cap >= min(self.history_size, max(1, int(max_evals))))

    def _prep(self, g):
        """The gradient flattened in the problem's dtype, and max |g| (for tolerance_grad)."""
        g = tf.reshape(tf.cast(g, self.dtype), [-1])
        return g, tf.reduce_max(tf.abs(g))

    def _advance(self, x, g):
        """The part shared by every iteration once ``d`` and ``t`` are set: remember the
        gradient, ``gtd = g·d``, the moved point ``x + t d`` and ``max |t d|``."""
        d, t = self.d.read_value(), self.t.read_value()
        self.prev_g.assign(g)
        td = d * t
        return x + td, tf.stack([tf.tensordot(g, d, 1), tf.reduce_max(tf.abs(td))])

    def _first(self, x, g):
        """Iteration 1 of a run: clear the history, ``d = -g``, ``t = min(1, 1/Σ|g|) · lr``
        (torch computes t as a Python float: here in float64, then cast)."""
        self.start.assign(0)
        self.count.assign(0)
        self.h_diag.assign(tf.ones([], self.dtype))
        self.d.assign(-g)
        s64 = tf.cast(tf.reduce_sum(tf.abs(g)), tf.float64)
        t = tf.minimum(tf.constant(1.0, tf.float64), 1.0 / s64) * tf.constant(self.lr, tf.float64)
        self.t.assign(tf.cast(t, self.dtype))
        return self._advance(x, g)

    def _later(self, x, g):
        """Iterations 2, 3, ...: history update when ``y·s > 1e-10``, two-loop direction, ``t = lr``."""
        dt, cap = self.dtype, self.cap
        y = g - self.prev_g
        s = self.d * self.t
        ys = tf.tensordot(y, s, 1)

        def append():
            start, count = self.start.read_value(), self.count.read_value()
            full = tf.equal(count, self.history_size)   # full: drop the oldest (torch's pop(0))
            j = (start + count) % cap
            self.start.assign(tf.where(full, (start + 1) % cap, start))
            self.count.assign(tf.where(full, count, count + 1))
            self.dirs.scatter_update(tf.IndexedSlices(y[None], j[None]))
            self.stps.scatter_update(tf.IndexedSlices(s[None], j[None]))
            self.ro.scatter_update(tf.IndexedSlices((1.0 / ys)[None], j[None]))
            self.h_diag.assign(ys / tf.tensordot(y, y, 1))
            return tf.constant(True)
        # torch compares ys (a 0-d tensor) with the Python float 1e-10: in float64 here.
        done = tf.cond(tf.cast(ys, tf.float64) > 1e-10, append, lambda: tf.constant(False))
        with tf.control_dependencies([done]):
            d = _two_loop(g, self.dirs.read_value(), self.stps.read_value(), self.ro.read_value(),
                          self.start.read_value(), self.count.read_value(), cap, self.h_diag.read_value())
        self.d.assign(d)
        self.t.assign(tf.constant(self.lr, dt))
        return self._advance(x, g)


def lbfgs_minimize(fun: Callable[[tf.Tensor], tuple], x0, spec: LBFGSSpec, max_evals: int,
                   callback: Optional[Callable[[int, float], Optional[bool]]] = None,
                   project: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
                   workspace: Optional[_Workspace] = None, project_at: str = "step"):
    """``resty.reference.lbfgs_minimize`` on TF tensors.

    ``fun(x) -> (loss, grad)`` with ``x`` shaped like ``x0`` (tensors on the device).
    ``callback(n_evals, loss) -> True`` stops early.  Returns ``(x, losses)`` with ``x`` a tensor
    shaped like ``x0`` and ``losses`` one float per evaluation.

    Per inner iteration the host runs ``fun`` once and one traced function (history update,
    two-loop direction, step, the moved point) and reads three scalars back (``max |g|``,
    ``g·d``, ``max |t d|``), the tests that steer the algorithm, as torch reads them.
    ``workspace`` (from :func:`lbfgs_workspace`) reuses the device buffers and traces of an
    earlier run of the same size; a fresh one is made when it is None or does not fit.
    """
    if spec.line_search is not None:
        raise ValueError("lbfgs_minimize: line_search=None only (as the reference)")
    x0 = tf.convert_to_tensor(x0)
    shape = x0.shape
    dt = x0.dtype
    x = tf.reshape(x0, [-1])
    losses: List[float] = []
    stop = [False]
    ws = workspace
    n_iter = 0
    if ws is None or not ws.fits(int(x.shape[0]), dt, spec, max_evals):
        ws = lbfgs_workspace(int(x.shape[0]), dt, spec, max_evals)

    inner = project is not None and project_at in ("evaluation", "update")

    def evaluate(xf):
        # ``project_at`` as the reference: evaluation/update project x itself before every
        # evaluation (clamp_ inside the closure), step only between outer steps.
        if inner:
            xf = tf.reshape(tf.cast(project(tf.reshape(xf, shape)), dt), [-1])
        f, g = fun(tf.reshape(xf, shape))
        fv = float(f)
        losses.append(fv)
        if callback is not None and callback(len(losses), fv):
            stop[0] = True
        flat, gmax = ws.prep(g)
        return xf, fv, flat, float(gmax)

    max_eval_per_step = spec.max_iter * 5 // 4
    while len(losses) < max_evals and not stop[0]:
        step_max_iter = min(spec.max_iter, max_evals - len(losses))
        x, loss, flat_grad, gmax = evaluate(x)
        evals = 1
        if stop[0] or gmax <= spec.tolerance_grad:
            break
        it = 0
        while it < step_max_iter:
            it += 1
            n_iter += 1
            prev_loss = loss
            x_new, scalars = (ws.first if n_iter == 1 else ws.later)(x, flat_grad)
            gtd, step_max = (float(v) for v in scalars.numpy())
            if gtd > -spec.tolerance_change:
                break
            x = x_new
            if it != step_max_iter:
                x, loss, flat_grad, gmax = evaluate(x)
                evals += 1
                if stop[0]:
                    break
            if it == step_max_iter or evals >= max_eval_per_step:
                break
            if gmax <= spec.tolerance_grad:
                break
            if step_max <= spec.tolerance_change:
                break
            if abs(loss - prev_loss) < spec.tolerance_change:
                break
        if project is not None:
            x = tf.reshape(tf.cast(project(tf.reshape(x, shape)), dt), [-1])
    return tf.reshape(x, shape), losses


def lbfgs_workspace(n: int, dtype, spec: LBFGSSpec, max_evals: int) -> _Workspace:
    """A workspace for :func:`lbfgs_minimize` (``n`` unknowns, up to ``max_evals`` evaluations
    per run), to keep between runs.  The history never holds more pairs than evaluations, so
    ``min(history_size, max_evals)`` rows are preallocated."""
    return _Workspace(n, dtype, min(spec.history_size, max(1, int(max_evals))), spec.history_size, spec.lr)
