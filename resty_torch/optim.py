"""Optimisers with the core's semantics: Adam (torch's formula, or Keras's epsilon-hat) and
L-BFGS driven the way :func:`resty.reference.lbfgs_minimize` documents."""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch

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
                step_size = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
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
    stops on the gradient tolerance before iterating ends the run."""
    group = opt.param_groups[0]
    state = opt.state[group["params"][0]]
    while evals() < max_evals:
        group["max_iter"] = min(spec.max_iter, max_evals - evals())
        before = state.get("n_iter", 0)
        opt.step(closure)
        if state.get("n_iter", 0) == before:
            break   # converged: the gradient is below tolerance_grad
        if project is not None:
            project()
