"""Optimisers with the core's semantics: Adam (torch's formula, or Keras's epsilon-hat) and
L-BFGS driven the way :func:`resty.reference.lbfgs_minimize` documents."""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence

import torch

from resty.reference import adam_betas, adam_bias_corrections
from resty.specs import AdamSpec, LBFGSSpec

__all__ = ["make_adam", "EpsilonHatAdam", "make_lbfgs", "lbfgs_outer_steps"]


def make_adam(params: Iterable[torch.Tensor], spec: AdamSpec, lr: Optional[float] = None,
              foreach: Optional[bool] = False) -> torch.optim.Optimizer:
    """torch.optim.Adam *is* the core's default formula (reference.adam_step); the Keras
    epsilon-hat placement gets its own small optimizer with the same state layout."""
    lr = spec.lr if lr is None else float(lr)
    if spec.epsilon_hat:
        return EpsilonHatAdam(params, lr=lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
                              weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
                            weight_decay=spec.weight_decay, foreach=foreach)


class EpsilonHatAdam(torch.optim.Optimizer):
    """Adam with Keras's epsilon placement (``AdamSpec.epsilon_hat``)::

        x -= lr·sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + eps)

    with Keras's float32-rounded betas in the bias corrections (resty.reference.adam_betas).
    State keys (``step``, ``exp_avg``, ``exp_avg_sq``) match torch.optim.Adam, so checkpoints
    have one layout.  ``step`` is a CPU tensor as in torch's non-capturable Adam: the bias
    corrections are host floats and no device sync happens."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-7, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                t = float(st["step"])
                st["exp_avg"].lerp_(g, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                bc1, bc2 = adam_bias_corrections(AdamSpec(beta1=b1, beta2=b2, epsilon_hat=True), t)
                step_size = group["lr"] * math.sqrt(bc2) / bc1
                denom = st["exp_avg_sq"].sqrt().add_(group["eps"])
                p.addcdiv_(st["exp_avg"], denom, value=-step_size)
        return loss


def make_lbfgs(param: torch.Tensor, spec: LBFGSSpec) -> torch.optim.LBFGS:
    """torch.optim.LBFGS with the spec's settings; max_eval is torch's default
    (max_iter·5//4), fixed at construction as the reference assumes."""
    return torch.optim.LBFGS([param], lr=spec.lr, max_iter=spec.max_iter, history_size=spec.history_size,
                             tolerance_grad=spec.tolerance_grad, tolerance_change=spec.tolerance_change,
                             line_search_fn=spec.line_search)


def lbfgs_outer_steps(opt: torch.optim.LBFGS, closure: Callable, spec: LBFGSSpec, max_evals: int,
                      evals: Callable[[], int], project: Optional[Callable[[], None]] = None) -> None:
    """Call ``opt.step(closure)`` until ``max_evals`` evaluations were made, exactly as
    :func:`resty.reference.lbfgs_minimize`: each outer step gets
    ``max_iter = min(spec.max_iter, evaluations left)`` (torch applies the last inner update
    without evaluating it), ``project`` (clamp) runs between outer steps, and a step that
    stops on the gradient tolerance before iterating ends the run.  With a line search
    (torch only) ``max_eval`` is cut to the evaluations left as well; torch checks it after each
    search, so the run can end up to 25 evaluations past ``max_evals``."""
    group = opt.param_groups[0]
    state = opt.state[group["params"][0]]
    while evals() < max_evals:
        group["max_iter"] = min(spec.max_iter, max_evals - evals())
        if spec.line_search is not None:   # several evaluations per iteration: cap them too
            group["max_eval"] = max_evals - evals()
        before = state.get("n_iter", 0)
        opt.step(closure)
        if state.get("n_iter", 0) == before:
            break   # converged: the gradient is below tolerance_grad
        if project is not None:
            project()


# --------------------------------------------------------------------------- device-resident
class DeviceLBFGS:
    """L-BFGS that never reads a value back to the host, so a whole iteration (loss, gradient
    and update) can be captured in one CUDA graph.

    It is torch.optim.LBFGS's iteration (no line search) as driven by
    :func:`lbfgs_outer_steps`, with the same numbers in exact arithmetic:

    * the two-loop recursion is written as two small unit-triangular solves plus four
      matrix-vector products over the history (``S``, ``Y`` are ``(m, n)`` ring buffers and
      ``M[p, q] = s_p·y_q`` is kept up to date one row and one column per iteration), so an
      iteration costs ~20 kernels whatever ``history_size`` is, instead of 4·history;
    * a pair with ``y·s <= 1e-10`` is not stored, as in torch (the buffer write is a
      ``torch.where``);
    * first step ``t = min(1, 1/|g|₁)·lr``, then ``t = lr``;
    * where torch *ends the run* (``|g|∞ <= tolerance_grad``) or stops stepping
      (``g·d > -tolerance_change``), the image is frozen by a device flag instead;
    * torch's two inner-loop breaks that only cost an extra evaluation at the same point
      (``|Δloss| < tolerance_change``, ``|t·d|∞ <= tolerance_change``) are not modelled: they
      happen only at convergence.  The test compares trajectories with torch.optim.LBFGS.

    Call :meth:`step` with the flat gradient at the current point; it updates ``x`` in place
    (under no_grad).  State is float64 for float64 ``x``, else float32."""

    def __init__(self, x: torch.Tensor, spec: LBFGSSpec, history_size: Optional[int] = None):
        if spec.line_search is not None:
            raise ValueError("DeviceLBFGS: line_search must be None")
        self.x = x
        self.spec = spec
        m = int(spec.history_size if history_size is None else history_size)
        if m < 1:
            raise ValueError(f"history_size: got {m}; must be >= 1")
        self.m = m
        n = x.numel()
        dt = torch.float64 if x.dtype == torch.float64 else torch.float32
        dev = x.device
        z = lambda *shape: torch.zeros(shape, dtype=dt, device=dev)   # noqa: E731
        self.S, self.Y, self.M, self.rho = z(m, n), z(m, n), z(m, m), z(m)
        self.head = torch.zeros((), dtype=torch.long, device=dev)      # next slot to write
        self.d, self.prev_g = z(n), z(n)
        self.t = z()
        self.h_diag = torch.ones((), dtype=dt, device=dev)
        self.frozen = torch.zeros((), dtype=torch.bool, device=dev)
        self._ar = torch.arange(m, device=dev)
        self._eye = torch.eye(m, dtype=dt, device=dev)
        self.n_iter = 0   # host counter: the only thing the first iteration needs to know

    def _push(self, s: torch.Tensor, y: torch.Tensor) -> None:
        ys = torch.dot(y, s)
        accept = (ys > 1e-10) & ~self.frozen
        p = self.head.view(1)
        self.S.index_copy_(0, p, torch.where(accept, s, self.S.index_select(0, p)[0])[None])
        self.Y.index_copy_(0, p, torch.where(accept, y, self.Y.index_select(0, p)[0])[None])
        self.rho.index_copy_(0, p, torch.where(accept, 1.0 / ys, self.rho.index_select(0, p)))
        self.M.index_copy_(0, p, (self.Y @ self.S.index_select(0, p)[0])[None])      # s_p·y_q
        self.M.index_copy_(1, p, (self.S @ self.Y.index_select(0, p)[0])[:, None])   # s_q·y_p
        # State is updated in place (copy_), never rebound: a captured CUDA graph reads and
        # writes the same tensors on every replay.
        self.h_diag.copy_(torch.where(accept, ys / torch.dot(y, y), self.h_diag))
        self.head.copy_(torch.where(accept, (self.head + 1) % self.m, self.head))

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        # Logical order oldest..newest: slot head, head+1, ... (empty slots are all-zero with
        # rho 0, so they contribute nothing wherever they sit).
        order = (self.head + self._ar) % self.m
        rho = self.rho.index_select(0, order)
        M = self.M.index_select(0, order).index_select(1, order)
        a = -(self.S @ g).index_select(0, order)                        # s_i·q0, q0 = -g
        # loop 1 (newest first): al_i = rho_i (s_i·q0 - sum_{j>i} al_j s_i·y_j)
        U = self._eye + rho[:, None] * torch.triu(M, 1)
        al = torch.linalg.solve_triangular(U, (rho * a)[:, None], upper=True, unitriangular=True)[:, 0]
        al_phys = torch.zeros_like(al).index_copy_(0, order, al)
        r = (-g - self.Y.t() @ al_phys) * self.h_diag                  # r0 = H_diag · q
        b = (self.Y @ r).index_select(0, order)
        # loop 2 (oldest first): c_i = al_i - be_i, be_i = rho_i (y_i·r0 + sum_{j<i} c_j y_i·s_j)
        Lm = self._eye + rho[:, None] * torch.tril(M.t(), -1)
        c = torch.linalg.solve_triangular(Lm, (al - rho * b)[:, None], upper=False, unitriangular=True)[:, 0]
        c_phys = torch.zeros_like(c).index_copy_(0, order, c)
        return r + self.S.t() @ c_phys

    @torch.no_grad()
    def step(self, flat_grad: torch.Tensor) -> None:
        spec = self.spec
        g = flat_grad.reshape(-1).to(self.d.dtype)
        self.frozen |= g.abs().max() <= spec.tolerance_grad
        self.n_iter += 1
        if self.n_iter == 1:
            d = -g
            t = torch.clamp(1.0 / g.abs().sum(), max=1.0) * spec.lr
        else:
            self._push(self.d * self.t, g - self.prev_g)
            d = self._direction(g)
            t = torch.full_like(self.t, spec.lr)
        ok = (torch.dot(g, d) <= -spec.tolerance_change) & ~self.frozen
        t = torch.where(ok, t, torch.zeros_like(t))
        self.d.copy_(d)
        self.t.copy_(t)
        self.prev_g.copy_(g)
        # d is flat in logical (NCHW) order; viewing it as x's shape also works for a
        # channels_last x (the add follows x's strides).
        self.x.add_((d * t).view(self.x.shape).to(self.x.dtype))


class DeviceAdam:
    """Adam whose step counter and bias corrections live on the device (no host sync, so the
    update can be captured in a CUDA graph).  Torch's formula, or Keras's epsilon-hat when
    ``spec.epsilon_hat``; same state names as torch.optim.Adam."""

    def __init__(self, params: Iterable[torch.Tensor], spec: AdamSpec, lr: Optional[float] = None):
        self.params = list(params)
        self.spec = spec
        self.lr = spec.lr if lr is None else float(lr)
        dev = self.params[0].device
        self.step_count = torch.zeros((), dtype=torch.float64, device=dev)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        s = self.spec
        self.step_count += 1
        b1, b2 = adam_betas(s)      # Keras (epsilon_hat): float32-rounded, as Keras does
        bc1 = 1 - b1 ** self.step_count
        bc2 = 1 - b2 ** self.step_count
        for p, g, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            if s.weight_decay:
                g = g.add(p, alpha=s.weight_decay)
            m.lerp_(g, 1 - s.beta1)
            v.mul_(s.beta2).addcmul_(g, g, value=1 - s.beta2)
            if s.epsilon_hat:
                step_size = (self.lr * torch.sqrt(bc2) / bc1).to(p.dtype)
                p.sub_(step_size * m / (v.sqrt() + s.eps))
            else:
                step_size = (self.lr / bc1).to(p.dtype)
                denom = v.sqrt() / torch.sqrt(bc2).to(p.dtype) + s.eps
                p.sub_(step_size * m / denom)


__all__ += ["DeviceLBFGS", "DeviceAdam"]
