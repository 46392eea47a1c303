"""Johnson et al. 2016 in PyTorch: the framework operations behind resty.fast.FastStylizerBase
(the transformer's forward, the perceptual loss, the training step, optionally captured as a
CUDA graph, a DataLoader over the core's batch schedule, and DDP under torchrun)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from resty import distributed as rdist
from resty.errors import ArgumentError, RestyError
from resty.fast import FastStylizerBase, StepOutcome, TrainingPlan, TrainingSession
from resty.runtime import warn_cpu_half_precision
from resty.temporal import training_perturbation
from resty.training_data import BatchSchedule, load_training_item

from . import distributed as tdist
from . import losses as L
from ._util import to_hwc, to_nchw
from .cudagraph import GraphedFunction, init_adam_state, optimizer_tensors
from .device import autocast, autocast_dtype, resolve_device, resolve_dtype
from .optim import make_adam
from .transformer import TransformerNet
from .vgg import VGGFeatures, loss_network_weights

__all__ = ["FastStylizer"]


# --------------------------------------------------------------------------- data
class _TrainData(torch.utils.data.Dataset):
    """Maps a key ``(step, slot, item index)`` to ``(crop or None, step, slot)``.

    The key carries the step and slot so the crop is the pure function
    ``resty.training_data.crop_rng(seed, step, slot)`` whichever worker loads it: the batches
    are the same with 0 or 8 workers, after a resume, and in the TF backend.  A slot of -1 marks
    a step whose shard of the global batch is empty on this process."""

    def __init__(self, items: List[Any], image_size: int, seed: int):
        self.items, self.image_size, self.seed = items, image_size, seed

    def __len__(self):
        return len(self.items)

    def __getitem__(self, key):
        step, slot, idx = key
        if slot < 0:
            return None, step, -1
        return load_training_item(self.items[idx], self.image_size, self.seed, step, slot), step, slot


class _Batches:
    """Batch sampler: the keys of steps ``start .. total-1`` from a BatchSchedule; with
    ``shard=(rank, world_size)`` only this rank's contiguous slots of each global batch
    (resty.distributed.shard_bounds).  Not a DistributedSampler: that one would make the data
    order depend on the number of processes; here the global batch of a step is the same
    for any number of processes (and after a resume with a different number)."""

    def __init__(self, sched: BatchSchedule, start: int, total: int, shard=(0, 1)):
        self.sched, self.start, self.total = sched, start, total
        self.lo, self.hi = rdist.shard_bounds(sched.batch_size, *shard)

    def __iter__(self):
        for s in range(self.start, self.total):
            keys = [(s, j, i) for j, i in enumerate(self.sched.batch(s)) if self.lo <= j < self.hi]
            # An empty shard (batch smaller than the world) still yields a marker for the step.
            yield keys or [(s, -1, -1)]

    def __len__(self):
        return max(0, self.total - self.start)


def _collate(batch):
    """Stack the readable crops; name the slots of the unreadable ones (training never dies on
    one file).  Returns ``(x or None, step, unreadable slots)``."""
    good = [c for c, _, _ in batch if c is not None]
    bad = [j for c, _, j in batch if c is None and j >= 0]
    x = torch.from_numpy(np.ascontiguousarray(np.stack(good).transpose(0, 3, 1, 2))) if good else None
    return x, batch[0][1], bad


# --------------------------------------------------------------------------- training session
def adam_state(opt: torch.optim.Optimizer, params: Dict[str, torch.Tensor]):
    """``(step, exp_avg, exp_avg_sq)`` of torch's Adam by parameter name, as NumPy."""
    m, v, step = {}, {}, 0
    for name, p in params.items():
        st = opt.state.get(p)
        if st:
            m[name] = st["exp_avg"].detach().cpu().numpy()
            v[name] = st["exp_avg_sq"].detach().cpu().numpy()
            step = int(float(st["step"]))
    return step, m, v


def load_adam_state(opt: torch.optim.Optimizer, params: Dict[str, torch.Tensor], step, exp_avg, exp_avg_sq) -> None:
    for name, p in params.items():
        if name in exp_avg:
            opt.state[p] = {"step": torch.tensor(float(step)),
                            "exp_avg": torch.from_numpy(exp_avg[name]).to(p.device, p.dtype),
                            "exp_avg_sq": torch.from_numpy(exp_avg_sq[name]).to(p.device, p.dtype)}



class _TrainingSession(TrainingSession):
    """One ``fit``: torch's Adam (or a captured CUDA-graph step), a DataLoader over the core's
    batch schedule, and under torchrun DDP with one small gloo all_reduce per step."""

    def __init__(self, owner: "FastStylizer", plan: TrainingPlan, cuda_graph: Optional[bool] = None):
        self.owner, self.plan = owner, plan
        self.ctx = self.dist = tdist.setup(owner.device)
        owner.net.train()
        # Only the parameters the driver trains (FastStylizerBase._is_trainable, e.g. the norm
        # tables for train_only="style_row"); the others are frozen for this fit.
        self._frozen = [p for n, p in owner.net.named_parameters() if p.requires_grad and not owner._is_trainable(n)]
        for p in self._frozen:
            p.requires_grad_(False)
        self.opt = make_adam([p for p in owner.net.parameters() if p.requires_grad], owner.preset.training.adam,
                             lr=plan.lr, foreach=None)
        self.scaler = torch.amp.GradScaler(owner.device.type) if owner.train_precision == torch.float16 else None
        self.cuda_graph = owner.cuda_graph if cuda_graph is None else bool(cuda_graph)

    def __exit__(self, *exc) -> None:
        self.owner.net.eval()
        for p in self._frozen:
            p.requires_grad_(True)

    # -- optimizer and RNG state, by canonical parameter name
    def optimizer_state(self):
        return adam_state(self.opt, dict(self.owner.net.named_parameters()))

    def load_optimizer_state(self, step, exp_avg, exp_avg_sq) -> None:
        load_adam_state(self.opt, dict(self.owner.net.named_parameters()), step, exp_avg, exp_avg_sq)

    def rng_state(self):
        rng = {"torch": torch.get_rng_state().tolist()}
        if self.owner.device.type == "cuda":
            rng["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
        return rng

    def load_rng_state(self, rng) -> None:
        if self.ctx.enabled:
            return        # the state saved is rank 0's: ranks reseed in start() instead
        if "torch" in rng:
            torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
        if "cuda" in rng and self.owner.device.type == "cuda":
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in rng["cuda"]])

    # -- the steps
    def start(self, style_grams, start_step: int) -> None:
        owner, plan, ctx = self.owner, self.plan, self.ctx
        self.grams = style_grams
        self.net_fn = owner._net_fn
        if ctx.enabled:
            # Per-rank seeds for any per-rank randomness (none in the loss; DataLoader worker
            # seeds derive from it): a pure function of (seed, rank, start step).
            torch.manual_seed(int(np.random.SeedSequence([plan.seed, ctx.rank, start_step]).generate_state(1)[0]))
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [owner.device.index if owner.device.index is not None else torch.cuda.current_device()] \
                if owner.device.type == "cuda" else None
            # DDP broadcasts rank 0's parameters now and averages gradients in backward.
            self.net_fn = DDP(owner._net_fn, device_ids=ids)
        if ctx.enabled and owner.preset.training.temporal_weight:
            raise ArgumentError("temporal_weight: the temporal loss trains in one process for now (not under DDP)")
        # The temporal term's warps change every step: it runs the eager step.
        use_graph = self.cuda_graph and not ctx.enabled and self.scaler is None \
            and not owner.preset.training.temporal_weight \
            and isinstance(self.opt, torch.optim.Adam)
        self.graph_step = owner.make_train_step(style_grams, self.opt, self.net_fn, cuda_graph=True) \
            if use_graph else None
        workers = plan.num_workers
        self.loader = torch.utils.data.DataLoader(
            _TrainData(plan.items, plan.image_size, plan.seed),
            batch_sampler=_Batches(plan.schedule, start_step, plan.total_steps, (ctx.rank, ctx.world_size)),
            collate_fn=_collate, num_workers=workers, pin_memory=owner.device.type == "cuda",
            persistent_workers=False, prefetch_factor=4 if workers else None)

    def steps(self, term):
        owner, ctx, B = self.owner, self.ctx, self.plan.batch_size
        for x, s, bad in self.loader:
            weight = None
            if ctx.enabled:
                # One small gloo all_reduce per step: the global batch's unreadable slots (so
                # every rank counts the same images) and whether any rank got SIGTERM.
                meta = torch.zeros(B + 1, dtype=torch.int64)
                meta[bad] = 1
                meta[B] = 1 if term.hit else 0
                ctx.all_sum_cpu(meta)
                if meta[B] > 0:
                    term.hit = True
                    return
                bad = [int(j) for j in np.flatnonzero(meta[:B].numpy())]
                n_images = B - len(bad)
                if n_images > 0 and x is None:
                    # This rank has nothing readable but the others do: DDP needs every rank
                    # in backward, so run a zero image with weight 0.
                    x = torch.zeros((1, 3, self.plan.image_size, self.plan.image_size))
                weight = (0 if x is None else x.shape[0]) / n_images if n_images else 0.0
            elif term.hit:
                return
            else:
                n_images = 0 if x is None else x.shape[0]
            if n_images == 0:
                yield s, (None, bad, 0)
                continue
            x = x.to(owner.device, owner.dtype, non_blocking=True)
            if owner.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            owner._temporal_key = (self.plan.seed, int(s))      # the temporal term's perturbation
            if self.graph_step is not None:
                terms = self.graph_step(x).clone()      # the graph's static output
            else:
                terms = self._eager_step(x, weight)
            yield s, (terms if weight is None else terms * weight, bad, n_images)

    def _eager_step(self, x: torch.Tensor, weight: Optional[float]) -> torch.Tensor:
        opt, scaler = self.opt, self.scaler
        opt.zero_grad(set_to_none=True)
        terms = self.owner._train_loss(x, self.grams, self.net_fn)
        objective = terms[0]
        if weight is not None and weight * self.ctx.world_size != 1.0:
            # DDP averages gradients over the ranks; weighting each rank's batch mean by
            # n_r·W/N makes that the mean over the N images of the global batch (exactly what
            # one process computes), even for uneven shards.
            objective = objective * (weight * self.ctx.world_size)
        if scaler is not None:
            scaler.scale(objective).backward()
            scaler.step(opt)
            scaler.update()
        else:
            objective.backward()
            opt.step()
        return terms.detach()

    def resolve(self, handles):
        done = [t for t, _, _ in handles if t is not None]
        rows = iter(())
        if done:
            stacked = torch.stack(done)
            if self.ctx.enabled:
                stacked = self.ctx.all_sum(stacked)   # rows hold n_r/N-weighted local means
            rows = iter(stacked.to("cpu", torch.float64).numpy())
        return [StepOutcome(None if t is None else next(rows), bad, n) for t, bad, n in handles]


# --------------------------------------------------------------------------- stylizer
class FastStylizer(FastStylizerBase):
    """Feed-forward style transfer (Johnson et al. 2016 with instance norm) in PyTorch.

    The VGG loss network is only built when :meth:`fit` needs it, so a trained model loads and
    stylises without ImageNet weights.  The speed options (``precision``, ``channels_last``,
    ``cuda_graph``, ``compile``, ``pad_channels``, ``io_convs``, ``norm_impl``, ``pad_impl``,
    ``fast``) are described in docs/BACKEND_API.md; none changes the default path's results."""

    backend_name = "torch"
    engine_name = "torch"

    def __init__(self, preset="johnson2016", weights="imagenet", device=None, dtype="float32",
                 transformer_weights=None, precision=None, channels_last=False, compile=False,
                 cuda_graph=False, fast=False, pad_channels=None, norm_impl=None, pad_impl=None, io_convs=None):
        self.preset, tw = self._resolve_model(preset, transformer_weights)
        self.device = resolve_device(device if device is not None else tdist.default_device())
        self.dtype = resolve_dtype(dtype)
        train_precision = precision
        if fast and self.device.type == "cuda":
            if precision is None and self.dtype == torch.float32:
                # fp16 for inference; bf16 for training, since fp16 training needs a GradScaler,
                # whose host sync keeps the step out of a CUDA graph.
                precision, train_precision = "fp16", "bf16"
            cuda_graph = True
            pad_channels = 8 if pad_channels is None else pad_channels
        self.precision = autocast_dtype(precision)
        if self.device.type == "cpu":
            warn_cpu_half_precision(precision)
        self.train_precision = autocast_dtype(train_precision)
        self.channels_last = bool(channels_last)
        self.cuda_graph = bool(cuda_graph)
        if isinstance(compile, str) and self.cuda_graph and compile in ("reduce-overhead", "max-autotune"):
            raise RestyError(f"compile={compile!r} uses torch.compile's own CUDA graphs; with cuda_graph=True use "
                             "compile=True or 'max-autotune-no-cudagraphs' (resty captures the graph)")
        self.weights = weights
        self.net = TransformerNet(self.preset.transformer, tw, dtype=self.dtype, device=self.device)
        if norm_impl is not None or pad_channels is not None or pad_impl is not None or io_convs is not None:
            self.net.configure(norm_impl=norm_impl, pad_channels=pad_channels, pad_impl=pad_impl, io_convs=io_convs)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.compile_mode = (compile if isinstance(compile, str) else "default") if compile else None
        if compile:
            kw = {} if self.compile_mode == "default" else {"mode": self.compile_mode}
            if self.cuda_graph:
                kw["dynamic"] = False   # one graph per shape anyway
            self._net_fn = torch.compile(self.net, **kw)
            # Training compiles the whole loss (transformer, VGG, Gram and loss terms) as one
            # function: the fusions that matter there are around VGG (bias+ReLU, the Gram
            # scaling, the loss reductions), not only inside the transformer.  It traces the
            # eager net, so no compiled module is nested inside it.
            self._train_loss_compiled = torch.compile(self._train_loss_own_net, **kw)
        else:
            self._net_fn = self.net
            self._train_loss_compiled = None
        # fast=True on the CPU: stylize() runs the net as resty.onnx_runtime's rewritten graph on
        # ONNX Runtime; training, stylize_tensor and what the graph cannot honour stay in torch.
        self._init_books(fast, self.device.type == "cpu", {
            f"precision={precision!r}": self.precision is not None,
            f"dtype={dtype!r}": self.dtype != torch.float32,
            "compile=True was asked for": bool(compile),
            "channels_last=True was asked for": self.channels_last})
        # Inference: one captured graph per (shape, dtype, train/eval mode); eager on the CPU.
        self._infer = GraphedFunction(self._infer_impl, enabled=self.cuda_graph, warmup=3 if compile else 2)

    # ------------------------------------------------------------------ helpers
    def _build_vgg(self) -> VGGFeatures:
        p = self.preset
        vgg = VGGFeatures(p.vgg.arch, loss_network_weights(self.weights, p), p.vgg.pooling,
                          layers=p.fast_loss.all_layers, dtype=self.dtype, device=self.device)
        return vgg.to(memory_format=torch.channels_last) if self.channels_last else vgg

    def _autocast(self, precision="inference"):
        """Autocast (``precision``: "inference" or "train") for code that may be captured in a
        CUDA graph: there the weight-cast cache is off (a cached cast must not outlive the
        capture that allocated it)."""
        dt = self.train_precision if precision == "train" else self.precision
        return autocast(self.device, dt, cache=self.device.type != "cuda")

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return to_nchw(a, self.device, self.dtype, self.channels_last)

    @torch.no_grad()
    def _grams_of(self, style: np.ndarray) -> Dict[str, torch.Tensor]:
        loss = self.preset.fast_loss
        with autocast(self.device, self.train_precision):
            f = self.vgg(self._tensor(style), layers=loss.style_layers)
        return {name: L.gram(f[name], loss.gram)[0] for name in loss.style_layers}

    def _train_loss(self, x: torch.Tensor, grams, net_fn=None) -> torch.Tensor:
        """``[total, content, style, tv]`` of the batch ``x`` through ``net_fn`` (default: this
        stylizer's own net; with ``compile`` the whole loss is the compiled function)."""
        if (net_fn is None or net_fn is self._net_fn) and self._train_loss_compiled is not None \
                and not self.preset.training.temporal_weight:
            return self._train_loss_compiled(x, grams)
        return self._train_loss_eager(x, grams, net_fn or self._net_fn)

    def _train_loss_own_net(self, x: torch.Tensor, grams) -> torch.Tensor:
        return self._train_loss_eager(x, grams, self.net)

    def _train_loss_eager(self, x: torch.Tensor, grams, net_fn) -> torch.Tensor:
        loss = self.preset.fast_loss
        with self._autocast("train"):
            y = net_fn(x)
            fy = self.vgg(y)
            with torch.no_grad():
                fx = self.vgg(x, layers=loss.content_layers) if loss.content_layers else {}
        return self._temporal_terms(L.total_loss(fy, y, loss, fx, grams), x, y, net_fn)

    def _temporal_terms(self, terms: torch.Tensor, x: torch.Tensor, y: torch.Tensor, net_fn) -> torch.Tensor:
        """``terms`` with the ReReVST term (resty.temporal.temporal_loss) of this step: ``total``
        gains ``w·L_temporal``, appended as a fifth term ``temporal``; unchanged at weight 0."""
        tc = self.preset.training
        key = getattr(self, "_temporal_key", None)
        pert = None if key is None else training_perturbation(tc, key[0], key[1], x.shape[0], x.shape[2], x.shape[3])
        if pert is None:
            return terms
        from .temporal import temporal_loss
        with self._autocast("train"):
            lt = temporal_loss(net_fn, x, pert[0], pert[1], y=y)
        wt = tc.temporal_weight * lt.to(terms.dtype)
        return torch.cat([terms[:1] + wt, terms[1:], wt[None]])

    def make_train_step(self, grams, opt: torch.optim.Optimizer, net_fn=None, cuda_graph: Optional[bool] = None,
                        warmup: int = 3) -> Callable[[torch.Tensor], torch.Tensor]:
        """``step(x) -> [total, content, style, tv]`` (detached): one Adam step on the NCHW batch
        ``x``.  With ``cuda_graph`` on CUDA the step is one captured graph per batch shape:
        ``opt`` must be a torch.optim.Adam (made ``capturable``), the warm-up steps are undone,
        so the first call is the first real step, and the result is the graph's static output
        (copy it before the next call).  No loss scaling: bf16 or float32 only."""
        cuda_graph = self.cuda_graph if cuda_graph is None else bool(cuda_graph)

        def step(x: torch.Tensor) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            terms = self._train_loss(x, grams, net_fn)
            terms[0].backward()
            opt.step()
            return terms.detach()

        if not cuda_graph or self.device.type != "cuda":
            return step
        if not isinstance(opt, torch.optim.Adam):
            raise RestyError(f"cuda_graph training needs torch.optim.Adam (capturable); got {type(opt).__name__} "
                             "(this preset's Adam spec uses epsilon_hat): use cuda_graph=False")
        for g in opt.param_groups:
            g["capturable"] = True
        net = self.net

        def mutated():
            return [*net.parameters(), *net.buffers(), *optimizer_tensors(opt)]

        return GraphedFunction(step, enabled=True, warmup=warmup, restore=mutated,
                               before_capture=lambda: init_adam_state(opt))


    def _training_session(self, plan: TrainingPlan, cuda_graph: Optional[bool] = None) -> _TrainingSession:
        """``cuda_graph`` (default: the constructor's) runs each step as a captured CUDA graph
        (:meth:`make_train_step`) where it can: one process, no fp16 GradScaler, a
        torch.optim.Adam; otherwise the eager step runs."""
        return _TrainingSession(self, plan, cuda_graph)

    # ------------------------------------------------------------------ inference
    def _writes_files(self) -> bool:
        info = rdist.process_info()
        return not (info.distributed and info.source == "torchrun" and not info.is_main)

    def _eval_mode(self) -> None:
        self.net.eval()

    def _fast_path_allowed(self) -> bool:
        return not self.net.training

    def _weights_key(self):
        # torch bumps a tensor's _version on every in-place write (optimizer steps, copy_ in
        # load_canonical); a replaced tensor has a new id.  The conditional norm's style vector
        # is not a weight (the ONNX Runtime path takes it as an input): left out.
        style = getattr(self.net, "style_weights", None)
        return tuple((id(t), t._version) for t in (*self.net.parameters(), *self.net.buffers()) if t is not style)

    def _infer_impl(self, x: torch.Tensor, training: bool = False) -> torch.Tensor:
        with self._autocast():
            y = self._net_fn(x)
        if y.dtype in (torch.float16, torch.bfloat16):
            y = y.float()
        return y.clamp(0.0, 1.0)

    @torch.inference_mode()
    def stylize_tensor(self, x: torch.Tensor, *, copy: bool = True) -> torch.Tensor:
        """The network on an NCHW RGB [0, 1] tensor (already on :attr:`device`), output
        clamped to [0, 1] in ``self.dtype``.  With ``cuda_graph`` this replays the graph of
        ``x``'s shape (captured on first use); with ``copy=False`` the result is the graph's
        static output, overwritten by the next call of the same shape."""
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self._infer(x, bool(self.net.training))
        return y.clone() if copy and self._infer.graphs else y

    def reset_graphs(self) -> None:
        """Forget the captured inference graphs (needed after replacing parameter tensors,
        e.g. ``net.to(...)``; in-place weight updates such as training or ``load_canonical``
        are seen by the graphs)."""
        self._infer.reset()

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray, full_precision: bool) -> np.ndarray:
        x = self._tensor(batch)
        if full_precision:
            return to_hwc(self.net(x).clamp(0.0, 1.0))
        return to_hwc(self.stylize_tensor(x, copy=False))
