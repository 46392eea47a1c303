"""Johnson et al. 2016: train a feed-forward transformer against a perceptual loss, then
stylise in one forward pass."""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from resty import checkpoints, inference, inputs, runtime, training_data
from resty import distributed as rdist
from resty.onnx_runtime import CpuFastPath
from resty import weights as W
from resty.errors import RestyError, TrainingError
from resty.images import resize_longest
from resty.presets import Preset, get as get_preset, resolve

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
    """Maps a key ``(step, slot, item index)`` to ``(crop or None, name)``.

    The key carries the step and slot so the crop is the pure function
    ``training_data.crop_rng(seed, step, slot)`` whichever worker loads it: the batches are the same
    with 0 or 8 workers, after a resume, and in the TF backend."""

    def __init__(self, items: List[Any], image_size: int, seed: int):
        self.items, self.image_size, self.seed = items, image_size, seed

    def __len__(self):
        return len(self.items)

    def __getitem__(self, key):
        step, slot, idx = key
        crop = training_data.load_training_item(self.items[idx], self.image_size, self.seed, step, slot)
        return crop, training_data.item_name(self.items[idx], idx), step, slot


class _Batches:
    """Batch sampler: the keys of steps ``start .. total-1`` from a BatchSchedule; with
    ``shard=(rank, world_size)`` only this rank's contiguous slots of each global batch
    (resty.distributed.shard_bounds).  Not a DistributedSampler: that one would make the data
    order depend on the number of processes; here the global batch of a step is the same
    for any number of processes (and after a resume with a different number)."""

    def __init__(self, sched: training_data.BatchSchedule, start: int, total: int, shard=(0, 1)):
        self.sched, self.start, self.total = sched, start, total
        self.lo, self.hi = rdist.shard_bounds(sched.batch_size, *shard)

    def __iter__(self):
        for s in range(self.start, self.total):
            keys = [(s, j, i) for j, i in enumerate(self.sched.batch(s)) if self.lo <= j < self.hi]
            # An empty shard (batch smaller than the world) still yields a marker for the step.
            yield keys or [(s, -1, -1)]

    def __len__(self):
        return max(0, self.total - self.start)


class _ShardData(_TrainData):
    def __getitem__(self, key):
        if key[2] < 0:
            return None, None, key[0], -1
        return super().__getitem__(key)


def _collate(batch):
    """Stack the readable crops; name the unreadable ones (training never dies on one file).
    Returns ``(x or None, skipped names, step, unreadable slots)``."""
    good = [c for c, _, _, j in batch if c is not None]
    skipped = [n for c, n, _, j in batch if c is None and j >= 0]
    bad = [j for c, _, _, j in batch if c is None and j >= 0]
    x = torch.from_numpy(np.ascontiguousarray(np.stack(good).transpose(0, 3, 1, 2))) if good else None
    return x, skipped, batch[0][2], bad


# --------------------------------------------------------------------------- stylizer
class FastStylizer:
    """Feed-forward style transfer (Johnson et al. 2016 with instance norm).

    The VGG loss network is only built when :meth:`fit` needs it, so a trained model loads and
    stylises without ImageNet weights.

    Speed options (none changes the float32/float64 default path):

    * ``precision="bf16"|"fp16"``: autocast; instance norm then takes the fused
      float32-statistics path (TransformerNet.configure, ``norm_impl="auto"``).
    * ``channels_last=True``: NHWC activations (tensor-core convolutions without transposes);
      the net's reflection pads and instance norms then keep that layout (TransformerNet
      ``pad_impl``/``norm_impl`` "auto"), so no layer converts back to NCHW.
    * ``cuda_graph=True``: on CUDA, :meth:`stylize` / :meth:`stylize_tensor` capture the
      network once per input shape (resty_torch.cudagraph) and replay it: no per-kernel CPU
      launch cost.  :meth:`fit` runs its training step (forward, backward, capturable Adam)
      as one captured graph too (single process, bf16 or float32; fp16 needs a GradScaler,
      which syncs, and DDP needs its hooks: both fall back to the eager step).  On the CPU
      the same code runs eagerly.
    * ``compile=True`` or a torch.compile mode (``"default"``, ``"max-autotune-no-cudagraphs"``;
      with ``cuda_graph`` the CUDA-graph modes of torch.compile are refused, resty captures):
      inference compiles the network; training compiles the whole loss (network, VGG, Gram
      matrices and loss terms) as one function (not under DDP, which keeps the eager loss).
      On the CPU compiling is slow and the result not faster; it is meant for GPUs.
    * ``pad_channels=8``: the 3-channel input/output convolutions padded to 8 channels with
      zero weights (exact); ``io_convs="s2d"``: those convolutions on pixel_unshuffle'd maps
      (12 channels; not yet timed on a GPU); ``norm_impl``, ``pad_impl``: see
      TransformerNet.configure.
    * ``fast=True``: on CUDA, what measured fastest without compiling (H200, 1024 px:
      7.4 ms vs 8.2 ms eager TF32; add ``compile=True`` for 2.7 ms after a one-off compile):
      fp16 autocast (unless ``precision`` is given; bf16's output error was 7x fp16's) +
      ``pad_channels=8`` + ``cuda_graph``, NCHW (channels_last was 1.9x slower when torch's
      reflection pad still returned NCHW; the layout-keeping pad is not yet timed); :meth:`fit` then trains in bf16 with the captured step
      (fp16 training needs a GradScaler, whose host sync cannot be captured).  On the CPU,
      :meth:`stylize` runs through ONNX Runtime (resty.onnx_runtime.CpuFastPath: the same net
      as an exact rewritten float32 graph, ~2x eager torch at 512 px on 2 cores, rebuilt when
      the weights change) when onnxruntime is installed and the spec, dtype and options allow
      (``inference_engine`` says which ran, ``fast_path_note`` why not); :meth:`fit` and
      :meth:`stylize_tensor` stay in torch.
    """

    def __init__(self, preset="johnson2016", weights="imagenet", device=None, dtype="float32",
                 transformer_weights=None, precision=None, channels_last=False, compile=False,
                 cuda_graph=False, fast=False, pad_channels=None, norm_impl=None, pad_impl=None, io_convs=None):
        self.preset: Preset = resolve(preset)
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
            runtime.warn_cpu_half_precision(precision)
        self.train_precision = autocast_dtype(train_precision)
        self.channels_last = bool(channels_last)
        self.cuda_graph = bool(cuda_graph)
        if isinstance(compile, str) and self.cuda_graph and compile in ("reduce-overhead", "max-autotune"):
            raise RestyError(f"compile={compile!r} uses torch.compile's own CUDA graphs; with cuda_graph=True use "
                             "compile=True or 'max-autotune-no-cudagraphs' (resty captures the graph)")
        self.weights = weights
        tw = transformer_weights
        if tw is None:
            tw = f"random:{self.preset.training.seed}"
        if isinstance(tw, W.WeightSet) and tw.spec != self.preset.transformer:
            self.preset = self.preset.replace(transformer=tw.spec)
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
        # ONNX Runtime (about 2x eager torch on 2 cores at 512 px; rebuilt when the weights
        # change).  Training, stylize_tensor and anything the graph cannot honour stay in torch.
        self._cpu_fast, self.fast_path_note = None, None
        if fast and self.device.type == "cpu":
            self._cpu_fast, self.fast_path_note = CpuFastPath.for_stylizer(self.preset.transformer, {
                f"precision={precision!r}": self.precision is not None,
                f"dtype={dtype!r}": self.dtype != torch.float32,
                "compile=True was asked for": bool(compile),
                "channels_last=True was asked for": self.channels_last})
        # Inference: one captured graph per (shape, dtype, train/eval mode); eager on the CPU.
        self._infer = GraphedFunction(self._infer_impl, enabled=self.cuda_graph, warmup=3 if compile else 2)
        self._vgg: Optional[VGGFeatures] = None
        self.history: List[Dict] = []
        self.skipped: List[str] = []
        self.skipped_count = 0
        self.step = 0

    # ------------------------------------------------------------------ helpers
    @property
    def vgg(self) -> VGGFeatures:
        if self._vgg is None:
            p = self.preset
            ws = loss_network_weights(self.weights, p)
            self._vgg = VGGFeatures(p.vgg.arch, ws, p.vgg.pooling, layers=p.fast_loss.all_layers,
                                    dtype=self.dtype, device=self.device)
            if self.channels_last:
                self._vgg.to(memory_format=torch.channels_last)
        return self._vgg

    def _autocast(self, precision="inference"):
        """Autocast for code that may be captured in a CUDA graph: on CUDA the weight-cast
        cache is off (a cached cast must not outlive the capture that allocated it; each
        weight is cast once per forward here anyway, so the cache saves nothing).
        ``precision``: "inference" (self.precision), "train" (self.train_precision)."""
        dt = self.train_precision if precision == "train" else self.precision
        if dt is None:
            return autocast(self.device, None)
        return torch.autocast(device_type=self.device.type, dtype=dt,
                              cache_enabled=self.device.type != "cuda")

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return to_nchw(a, self.device, self.dtype, self.channels_last)

    @torch.no_grad()
    def _style_grams(self, style, style_weights, style_size) -> Dict[str, torch.Tensor]:
        loss = self.preset.fast_loss
        styles, blend = inputs.prepare_styles(style, style_weights)
        grams: Dict[str, torch.Tensor] = {}
        for s, w in zip(styles, blend):
            if style_size is not None:
                s = resize_longest(s, style_size)
            with autocast(self.device, self.train_precision):
                f = self.vgg(self._tensor(s), layers=loss.style_layers)
            for l in loss.style_layers:
                g = L.gram(f[l], loss.gram)[0] * w
                grams[l] = g if l not in grams else grams[l] + g
        return grams

    def _train_loss(self, x: torch.Tensor, grams, net_fn=None) -> torch.Tensor:
        """``[total, content, style, tv]`` of the batch ``x`` through ``net_fn`` (default: this
        stylizer's own net; with ``compile`` the whole loss is the compiled function)."""
        if (net_fn is None or net_fn is self._net_fn) and self._train_loss_compiled is not None:
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
        return L.total_loss(fy, y, loss, fx, grams)

    def make_train_step(self, grams, opt: torch.optim.Optimizer, net_fn=None, cuda_graph: Optional[bool] = None,
                        warmup: int = 3) -> Callable[[torch.Tensor], torch.Tensor]:
        """``step(x) -> terms``: one training step on the batch ``x`` (NCHW RGB [0, 1] on
        :attr:`device`): zero the gradients, the loss (:meth:`_train_loss`), backward, and
        ``opt.step()``; returns the detached ``[total, content, style, tv]``.

        With ``cuda_graph`` (default: ``self.cuda_graph``) on CUDA the whole step is one
        captured graph per batch shape (resty_torch.cudagraph): ``opt`` must then be a
        torch.optim.Adam (it is switched to ``capturable``), its state is created before the
        capture, and the warm-up steps are undone (parameters, buffers and optimizer state
        restored), so the first call is the first real step.  The returned ``terms`` is then
        the graph's static output: copy it before the next call.  No loss scaling: use bf16 or
        float32 here (fp16 needs a GradScaler, whose inf check syncs with the host)."""
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

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_tensors(self, opt: torch.optim.Optimizer) -> Dict[str, np.ndarray]:
        t = {f"net.{k}": v for k, v in self.net.state_dict_canonical().items()}
        m, v, step = {}, {}, 0
        for name, p in self.net.named_parameters():
            st = opt.state.get(p)
            if st:
                m[name] = st["exp_avg"].detach().cpu().numpy()
                v[name] = st["exp_avg_sq"].detach().cpu().numpy()
                step = int(float(st["step"]))
        t.update(checkpoints.adam_state_to_tensors(step, m, v))
        return t

    def _save_checkpoint(self, ckdir, step, opt, sched, total, settings, keep) -> Path:
        epoch, pos = sched.epoch_position(step)
        rng = {"torch": torch.get_rng_state().tolist()}
        if self.device.type == "cuda":
            rng["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
        meta = {"step": step, "epoch": epoch, "position": pos, "total_steps": total,
                "settings": settings, "rng": rng, "history": self.history, "skipped": self.skipped,
                "skipped_count": self.skipped_count, "preset": self.preset.to_dict(),
                "backend": "torch", "dtype": str(self.dtype).replace("torch.", "")}
        return checkpoints.save_checkpoint(ckdir, step, self._checkpoint_tensors(opt), meta, keep=keep)

    def _restore(self, path, opt, settings, restore_rng=True) -> int:
        tensors, meta = checkpoints.load_checkpoint(path)
        old = meta.get("settings", {})
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            raise RestyError(f"{path}: cannot resume: the checkpoint was made with different settings "
                             f"({', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in diff.items())})")
        self.net.load_canonical({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        step, m, v = checkpoints.adam_state_from_tensors(tensors)
        for name, p in self.net.named_parameters():
            if name in m:
                opt.state[p] = {"step": torch.tensor(float(step)),
                                "exp_avg": torch.from_numpy(m[name]).to(p.device, p.dtype),
                                "exp_avg_sq": torch.from_numpy(v[name]).to(p.device, p.dtype)}
        rng = meta.get("rng", {}) if restore_rng else {}
        if "torch" in rng:
            torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in rng["cuda"]])
        self.history = list(meta.get("history", []))
        self.skipped = list(meta.get("skipped", []))
        self.skipped_count = int(meta.get("skipped_count", 0))
        return int(meta["step"])

    # ------------------------------------------------------------------ training
    def fit(self, images, style, *, steps=None, epochs=None, batch_size=None, image_size=None,
            checkpoint_dir=None, checkpoint_every=None, resume=False, seed=None, num_workers=None,
            progress=False, callback=None, lr=None, style_weights=None, cuda_graph=None) -> Dict[str, Any]:
        """Train the transformer on ``images`` (a folder, a list of paths, or an iterable of
        arrays) to reproduce ``style``.  Returns a summary dict (steps, history, skipped, ...).

        Batches are a pure function of ``(seed, step)`` (resty.training_data.BatchSchedule and
        crop_rng), so ``resume=True`` continues from the newest checkpoint in
        ``checkpoint_dir`` to the same weights an uninterrupted run reaches.  Unreadable
        images are skipped and listed in ``skipped``.  ``callback(step, losses, None)``
        returning True stops (after writing a checkpoint when a directory is given).
        ``cuda_graph`` (default: the constructor's) runs each step as a captured CUDA graph
        (:meth:`make_train_step`) where it can: one process, no fp16 GradScaler, a
        torch.optim.Adam; otherwise the eager step runs."""
        tc = self.preset.training
        if steps is None and epochs is None:
            steps, epochs = tc.steps, tc.epochs
        bs = int(batch_size or tc.batch_size)
        size = int(image_size or tc.image_size)
        seed = int(tc.seed if seed is None else seed)
        workers = int(tc.num_workers if num_workers is None else num_workers)
        ck_every = int(checkpoint_every or tc.checkpoint_every)
        items = training_data.list_training_images(images)
        sched = training_data.BatchSchedule(len(items), bs, seed)
        total = sched.total_steps(steps, epochs)
        settings = {"n_items": len(items), "batch_size": sched.batch_size, "image_size": size, "seed": seed,
                    "lr": float(lr if lr is not None else tc.adam.lr)}

        ctx = tdist.setup(self.device)
        self.net.train()
        opt = make_adam(self.net.parameters(), tc.adam, lr=lr, foreach=None)
        scaler = torch.amp.GradScaler(self.device.type) if self.train_precision == torch.float16 else None
        start = 0
        if not resume:
            self.history, self.skipped, self.skipped_count = [], [], 0
        elif checkpoint_dir is not None and checkpoints.latest_checkpoint(checkpoint_dir) is not None:
            # Under DDP every rank reads the same checkpoint (a shared folder); the torch RNG
            # state in it is rank 0's, so ranks reseed below instead.
            start = self._restore(checkpoints.latest_checkpoint(checkpoint_dir), opt, settings,
                                  restore_rng=not ctx.enabled)
        net_fn = self._net_fn
        if ctx.enabled:
            # Per-rank seeds for any per-rank randomness (none in the loss; DataLoader worker
            # seeds derive from it): a pure function of (seed, rank, start step).
            torch.manual_seed(int(np.random.SeedSequence([seed, ctx.rank, start]).generate_state(1)[0]))
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
                if self.device.type == "cuda" else None
            # DDP broadcasts rank 0's parameters now and averages gradients in backward.
            net_fn = DDP(self._net_fn, device_ids=ids)
        grams = self._style_grams(style, style_weights, tc.style_size)
        use_graph = (self.cuda_graph if cuda_graph is None else bool(cuda_graph)) and not ctx.enabled \
            and scaler is None and isinstance(opt, torch.optim.Adam)
        graph_step = self.make_train_step(grams, opt, net_fn, cuda_graph=True) if use_graph else None

        B, W = sched.batch_size, ctx.world_size
        data_cls = _ShardData if ctx.enabled else _TrainData
        loader = torch.utils.data.DataLoader(
            data_cls(items, size, seed), batch_sampler=_Batches(sched, start, total, (ctx.rank, W)),
            collate_fn=_collate, num_workers=workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False, prefetch_factor=4 if workers else None)
        n = max(0, total - start)
        hist = torch.zeros((max(n, 1), 4), dtype=torch.float64 if self.dtype == torch.float64 else torch.float32,
                           device=self.device)
        empty = set()                  # steps whose whole batch was unreadable (no update)
        flushed = 0                    # rows of hist already copied into self.history
        last_ck = start
        t0 = time.perf_counter()
        seen = 0                       # images trained on (all ranks together)
        stopped = False
        log_every = tc.log_every
        main = ctx.is_main

        def flush(upto: int) -> None:
            nonlocal flushed
            if upto <= flushed:
                return
            part = hist[flushed:upto]
            if ctx.enabled:
                part = ctx.all_sum(part.clone())   # rows hold n_r/N-weighted local means
            rows = part.to("cpu", torch.float64).numpy()
            for i, r in enumerate(rows):
                s = start + flushed + i + 1
                if s in empty:
                    self.history.append({"step": s, "skipped_batch": True})
                    continue
                if not np.isfinite(r[0]):
                    flushed += i
                    raise TrainingError(runtime.nonfinite_message(float(r[0]), s))
                self.history.append({"step": s, **{k: float(v) for k, v in zip(L.TERMS, r)}})
            flushed = upto

        def checkpoint(step):
            if main:
                self._save_checkpoint(checkpoint_dir, step, opt, sched, total, settings, tc.keep_checkpoints)
            ctx.barrier()              # nobody reads a checkpoint before rank 0 finished it

        with runtime.SigtermFlag(checkpoint_dir is not None) as term, \
                runtime.Progress(n, progress and main, desc="fit", unit="step") as bar:
            for i, (x, skipped, s, bad) in enumerate(loader):
                weight = None
                if ctx.enabled:
                    # One small gloo all_reduce per step: the global batch's unreadable slots
                    # (so every rank counts the same images and skips the same names) and
                    # whether any rank got SIGTERM.
                    meta = torch.zeros(B + 1, dtype=torch.int64)
                    meta[bad] = 1
                    meta[B] = 1 if term.hit else 0
                    ctx.all_sum_cpu(meta)
                    if meta[B] > 0:
                        term.hit = True
                        stopped = True
                        break
                    gbad = np.flatnonzero(meta[:B].numpy())
                    idx = sched.batch(s)
                    skipped = [training_data.item_name(items[idx[j]], idx[j]) for j in gbad]
                    n_global = B - len(gbad)
                    n_local = 0 if x is None else x.shape[0]
                    if n_global > 0 and x is None:
                        # This rank has nothing readable but the others do: DDP needs every
                        # rank in backward, so run a zero image with weight 0.
                        x = torch.zeros((1, 3, size, size))
                    weight = n_local / n_global if n_global else 0.0
                elif term.hit:
                    stopped = True
                    break
                if skipped:
                    self.skipped_count += len(skipped)
                    self.skipped.extend(k for k in skipped if k not in self.skipped)
                if x is None or (weight is not None and n_global == 0):
                    empty.add(s + 1)
                else:
                    x = x.to(self.device, self.dtype, non_blocking=True)
                    if self.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    seen += x.shape[0] if weight is None else n_global
                    if graph_step is not None:
                        hist[i] = graph_step(x)      # copies the static output
                    else:
                        opt.zero_grad(set_to_none=True)
                        terms = self._train_loss(x, grams, net_fn)
                        obj = terms[0]
                        if weight is not None and weight * W != 1.0:
                            # DDP averages gradients over W ranks; weighting each rank's batch
                            # mean by n_r·W/N makes that the mean over the N images of the global
                            # batch (exactly what one process computes), even for uneven shards.
                            obj = obj * (weight * W)
                        if scaler is not None:
                            scaler.scale(obj).backward()
                            scaler.step(opt)
                            scaler.update()
                        else:
                            obj.backward()
                            opt.step()
                        hist[i] = terms.detach() if weight is None else terms.detach() * weight
                done = s + 1
                due_ck = checkpoint_dir is not None and done % ck_every == 0
                if callback is not None or due_ck or done % log_every == 0 or done == total:
                    upto_before = flushed
                    flush(i + 1)
                    if self.history and bar.bar is not None:
                        last = self.history[-1]
                        post = {k: last[k] for k in L.TERMS if k in last}
                        el = time.perf_counter() - t0
                        if el > 0:
                            post["img/s"] = seen / el
                        bar.update(i + 1 - upto_before, post)
                self.step = done
                if due_ck:
                    checkpoint(done)
                    last_ck = done
                if callback is not None:
                    last = self.history[-1] if self.history else {}
                    stop = bool(callback(done, {k: last[k] for k in L.TERMS if k in last}, None))
                    if ctx.any(stop):    # every rank stops at the same step
                        stopped = True
                        break
            flush(self.step - start if self.step > start else 0)
            if checkpoint_dir is not None and self.step > last_ck:
                checkpoint(self.step)
        self.net.eval()
        seconds = time.perf_counter() - t0
        if term.hit:
            term.redeliver(self.step, checkpoint_dir)   # dies of SIGTERM now, the checkpoint written
        return {"steps": self.step, "start_step": start, "total_steps": total, "stopped": stopped,
                "history": self.history, "skipped": list(self.skipped), "skipped_count": self.skipped_count,
                "images_seen": seen, "seconds": seconds,
                "images_per_second": seen / seconds if seconds > 0 else float("nan"),
                "world_size": W, "rank": ctx.rank,
                "checkpoint": str(checkpoints.latest_checkpoint(checkpoint_dir)) if checkpoint_dir else None}

    # ------------------------------------------------------------------ inference
    @property
    def inference_engine(self) -> str:
        """What :meth:`stylize` runs on: ``"onnxruntime"`` (``fast=True`` on the CPU, see
        ``fast_path_note`` when not) or ``"torch"``."""
        return "onnxruntime" if self._cpu_fast is not None else "torch"

    def _weights_key(self):
        # torch bumps a tensor's _version on every in-place write (optimizer steps, copy_ in
        # load_canonical); a replaced tensor has a new id.
        return tuple((id(t), t._version) for t in (*self.net.parameters(), *self.net.buffers()))

    def _canonical_weightset(self) -> W.WeightSet:
        return W.WeightSet(self.net.state_dict_canonical(), "transformer", spec=self.preset.transformer)

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
    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._cpu_fast is not None and not self.net.training:
            y = self._cpu_fast.run(np.asarray(batch, np.float32).transpose(0, 3, 1, 2), self._weights_key(),
                                   self._canonical_weightset)
            return np.clip(y.transpose(0, 2, 3, 1), 0.0, 1.0)
        x = self._tensor(batch)
        out = to_hwc(self.stylize_tensor(x, copy=False))
        if self.precision is not None and not np.isfinite(out).all():
            # fp16 tops out at 65504: a trained net whose activations exceed it gives inf/NaN.
            # Recompute this batch in full precision rather than return a broken image.
            warnings.warn(f"{self.precision} inference gave non-finite values (overflow); this batch was "
                          f"recomputed in {self.dtype} (use precision='bf16' or None for this model)",
                          RuntimeWarning, stacklevel=3)
            with torch.inference_mode():
                out = to_hwc(self.net(x).clamp(0.0, 1.0))
        return np.clip(out, 0.0, 1.0)

    def stylize(self, images, *, preserve_color=False, tile=None, overlap=32, batch_size=None):
        """Stylise one image (-> H×W×3 float32) or several (a list or a B×H×W×3 array -> a
        list, or an array for an array).  Each output has its input's size.  ``tile`` (px)
        runs large images in overlapping tiles blended with linear ramps (instance norm then
        sees per-tile statistics; a larger ``overlap`` hides the seams better)."""
        self.net.eval()
        return inference.stylize_images(images, self._run, preserve_color=preserve_color, tile=tile,
                                     overlap=overlap, batch_size=batch_size)

    # ------------------------------------------------------------------ files
    def save(self, path, *, overwrite=False) -> Path:
        """Canonical safetensors file (resty.weights) with the TransformerSpec and the preset
        JSON in the metadata: loadable by either backend.  Under torchrun only rank 0 writes
        (the others return the path)."""
        info = rdist.process_info()
        if info.distributed and info.source == "torchrun" and not info.is_main:
            return Path(os.fspath(path))   # under torchrun only rank 0 writes (same weights everywhere)
        ws = W.WeightSet(self.net.state_dict_canonical(), "transformer",
                         source=f"resty_torch FastStylizer ({self.preset.name})", spec=self.preset.transformer,
                         extra={"preset": self.preset.to_dict(), "steps": int(self.step),
                                "skipped_count": int(self.skipped_count)})
        return W.save_weights(path, ws, overwrite=overwrite)

    @classmethod
    def load(cls, path, *, weights="imagenet", device=None, dtype="float32", **kw) -> "FastStylizer":
        """A stylizer from a file written by :meth:`save` (either backend)."""
        ws = W.load_weights(path, expect="transformer")
        preset_d = ws.extra.get("preset")
        preset = resolve(preset_d) if preset_d else get_preset("johnson2016")
        if preset.transformer != ws.spec:
            preset = preset.replace(transformer=ws.spec)
        obj = cls(preset, weights=weights, device=device, dtype=dtype, transformer_weights=ws, **kw)
        obj.step = int(ws.extra.get("steps", 0))
        return obj
