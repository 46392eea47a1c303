"""Johnson et al. 2016 in TensorFlow: the framework operations behind resty.fast.FastStylizerBase
(the transformer's forward, the perceptual loss and the training step as ``tf.function``,
optionally XLA-compiled, and a ``tf.data`` pipeline over the core's batch schedule, under a
``tf.distribute`` strategy when one is given).

Images are decoded and resized by the core (Pillow) inside the ``tf.data`` pipeline
(``tf.numpy_function`` in a parallel, order-preserving ``map`` plus ``prefetch``), never by
``tf.image``, so both backends train on the same pixels."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Dict

import numpy as np
import tensorflow as tf

from resty import distributed as rdist
from resty.errors import ArgumentError, RestyError
from resty.fast import FastStylizerBase, StepOutcome, TrainingPlan, TrainingSession
from resty.runtime import warn_cpu_half_precision
from resty.temporal import plan_arrays, training_perturbation
from resty.training_data import load_step_slots

from . import distributed as tdist
from . import losses as L
from .device import dtype_policy, resolve_device
from .optim import TorchAdam
from .transformer import TransformerNet
from .vgg import VGGFeatures

__all__ = ["FastStylizer"]


def adam_state(opt: TorchAdam, net, names):
    """``(step, exp_avg, exp_avg_sq)`` of a TorchAdam by canonical name, in canonical layouts."""
    m = {n: net.to_canonical_layout(n, a.numpy()) for n, a in zip(names, opt.m)}
    v = {n: net.to_canonical_layout(n, a.numpy()) for n, a in zip(names, opt.v)}
    return int(opt.step.numpy()), m, v


def load_adam_state(opt: TorchAdam, net, names, step, exp_avg, exp_avg_sq) -> None:
    opt.set_state(step, [net.from_canonical_layout(n, exp_avg[n]) for n in names],
                  [net.from_canonical_layout(n, exp_avg_sq[n]) for n in names])


class _TrainingSession(TrainingSession):
    """One ``fit``: the torch-formula Adam, a traced training step and a ``tf.data`` pipeline;
    under a strategy, one global step over the replicas (SIGTERM then kills at once: the
    workers would first have to agree on a step)."""

    def __init__(self, owner: "FastStylizer", plan: TrainingPlan):
        self.owner, self.plan = owner, plan
        strategy = owner.strategy
        self.scope = strategy.scope() if strategy is not None else tf.device(owner.device)
        self.dist = tdist.StrategyContext(strategy)
        self.handles_sigterm = strategy is None

    def __enter__(self) -> "_TrainingSession":
        self.scope.__enter__()
        names, variables = self.owner._variables()
        # Only the variables the driver trains (FastStylizerBase._is_trainable); the rest frozen.
        keep = [i for i, n in enumerate(names) if self.owner._is_trainable(n)]
        self.names, self.variables = [names[i] for i in keep], [variables[i] for i in keep]
        self.opt = TorchAdam(self.owner.preset.training.adam, self.variables, lr=self.plan.lr)
        return self

    def __exit__(self, *exc) -> None:
        self.scope.__exit__(*exc)

    def optimizer_state(self):
        return adam_state(self.opt, self.owner.net, self.names)

    def load_optimizer_state(self, step, exp_avg, exp_avg_sq) -> None:
        load_adam_state(self.opt, self.owner.net, self.names, step, exp_avg, exp_avg_sq)

    def start(self, style_grams, start_step: int) -> None:
        owner, plan = self.owner, self.plan
        if owner.strategy is not None and owner.preset.training.temporal_weight:
            raise ArgumentError("temporal_weight: the temporal loss trains in one process for now (not under a "
                                "distribution strategy)")
        if owner.strategy is None:
            self.train_step = owner._make_train_step(self.opt, self.variables, style_grams, plan.image_size)
            self.dataset = owner._pipeline(plan, start_step)
        else:
            self.dataset = owner._dist_pipeline(plan, start_step)
            self.train_step = owner._make_dist_step(self.opt, self.variables, style_grams,
                                                    self.dataset.element_spec, plan.batch_size)

    def steps(self, term):
        strategy = self.owner.strategy
        for elem in self.dataset:
            if term.hit:
                return
            if strategy is not None:
                step = int(strategy.experimental_local_results(elem[3])[0])
                yield step, self.train_step(elem)          # (global terms, global mask + [N])
                continue
            x, bad, n, step = elem
            bad = [int(j) for j in np.flatnonzero(bad.numpy())]
            warp = self.owner._temporal_inputs(self.plan.seed, int(step), x) if int(n) else ()
            yield int(step), (self.train_step(x, *warp) if int(n) else None, bad, int(n))

    def resolve(self, handles):
        out = []
        B = self.plan.batch_size
        for h in handles:
            if len(h) == 2:
                terms, meta = h
                meta = meta.numpy()
                n = int(round(meta[B]))
                out.append(StepOutcome(terms.numpy() if n else None, [int(j) for j in np.flatnonzero(meta[:B] > 0)],
                                       n))
            else:
                terms, bad, n = h
                out.append(StepOutcome(None if terms is None else terms.numpy(), bad, n))
        return out


class FastStylizer(FastStylizerBase):
    """Feed-forward style transfer (Johnson et al. 2016 with instance norm) in TensorFlow; see
    docs/BACKEND_API.md.  The VGG loss network is only built when :meth:`fit` needs it, so a
    trained model loads and stylises without ImageNet weights.  ``compile=True`` runs the
    training and inference steps with XLA (``tf.function(jit_compile=True)``).  ``fast=True``:
    XLA on a GPU; on the CPU :meth:`stylize` runs through ONNX Runtime when onnxruntime is
    installed and the spec and options allow (resty.onnx_runtime.CpuFastPath, the same path as
    resty_torch; ``inference_engine`` says which ran, ``fast_path_note`` why not).
    ``strategy``: a ``tf.distribute`` strategy (or its name) for :meth:`fit`."""

    backend_name = "tf"
    engine_name = "tensorflow"

    def __init__(self, preset="johnson2016", weights="imagenet", device=None, dtype: str = "float32",
                 transformer_weights=None, precision=None, compile: bool = False, strategy=None,
                 fast: bool = False):
        # First: a MultiWorkerMirroredStrategy (TF_CONFIG) must exist before any TF operation.
        self.strategy = tdist.resolve_strategy(strategy)
        self.preset, tw = self._resolve_model(preset, transformer_weights)
        self.device = resolve_device(device)
        self.dtype = dtype
        self.precision = precision
        dtype_policy(dtype, precision)          # validates the pair early
        on_cpu = "CPU" in str(self.device).upper()
        if on_cpu:
            warn_cpu_half_precision(precision)
        self.tf_dtype = tf.float64 if dtype == "float64" else tf.float32
        self.weights = weights
        self.jit_compile = bool(compile) or (bool(fast) and not on_cpu)
        with self._scope():
            self.net = TransformerNet(self.preset.transformer, tw, dtype=dtype, device=self.device,
                                      precision=precision)
        self._init_books(fast, on_cpu, {f"precision={precision!r}": precision is not None,
                                        f"dtype={dtype!r}": dtype != "float32",
                                        "compile=True was asked for": bool(compile)})
        self._infer = None

    # ------------------------------------------------------------------ helpers
    def _scope(self):
        """Where variables are created: the strategy's scope (mirrored variables), if any."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def _build_vgg(self) -> VGGFeatures:
        p = self.preset
        with self._scope():
            return VGGFeatures(p.vgg.arch, self.weights, p.vgg.pooling, layers=p.fast_loss.all_layers,
                               dtype=self.dtype, device=self.device, preprocessing=p.preprocessing_name,
                               precision=self.precision)

    def _grams_of(self, style: np.ndarray) -> Dict[str, tf.Tensor]:
        loss = self.preset.fast_loss
        f = self.vgg(tf.convert_to_tensor(style[None].astype(self.tf_dtype.as_numpy_dtype)))
        return {name: L.gram(f[name], loss.gram)[0] for name in loss.style_layers}

    def _variables(self):
        cv = self.net.canonical_variables()
        return list(cv.keys()), list(cv.values())

    def _dtype_name(self) -> str:
        return self.dtype

    # ------------------------------------------------------------------ training
    def _training_session(self, plan: TrainingPlan) -> _TrainingSession:
        return _TrainingSession(self, plan)

    def _pipeline(self, plan: TrainingPlan, start: int, replicas: int = 1, first: int = 0, per_pipeline: int = 1):
        """tf.data over the steps ``start .. total-1``: for every step, one element per replica
        this pipeline feeds, ``(crops (n, S, S, 3), mask of the global batch's unreadable slots
        (this replica's slots only), readable count n, step)``.  Replica ``r`` of ``R`` gets the
        contiguous slots ``shard_bounds(B, r, R)`` of the global batch, so the union over
        replicas is exactly the single-process batch of that step.  With nothing readable the
        element holds one zero image and count 0 (weight 0 in the loss)."""
        size, B, workers = plan.image_size, plan.batch_size, plan.num_workers
        np_dtype = self.tf_dtype.as_numpy_dtype

        def load(e):
            step, k = divmod(int(e), per_pipeline)
            step += start
            lo, hi = rdist.shard_bounds(B, first + k, replicas)
            crops, bad = load_step_slots(plan.items, plan.schedule, size, plan.seed, step, lo, hi)
            x = np.stack(crops).astype(np_dtype) if crops else np.zeros((1, size, size, 3), np_dtype)
            return x, bad, np.int32(len(crops)), np.int64(step)

        def tf_load(e):
            x, bad, n, step = tf.numpy_function(load, [e], [self.tf_dtype, tf.bool, tf.int32, tf.int64],
                                                stateful=False)
            x.set_shape([None, size, size, 3])
            bad.set_shape([B])
            n.set_shape([])
            step.set_shape([])
            return x, bad, n, step

        # Parallel decoding, results kept in step order (deterministic=True).
        ds = tf.data.Dataset.range(0, (plan.total_steps - start) * per_pipeline)
        ds = ds.map(tf_load, num_parallel_calls=workers or None, deterministic=True)
        opts = tf.data.Options()
        opts.threading.private_threadpool_size = max(1, workers) if workers else 0
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(opts).prefetch(max(2, workers) * per_pipeline)

    def _dist_pipeline(self, plan: TrainingPlan, start: int):
        """The pipelines of a strategy (``distribute_datasets_from_function``)."""
        def dataset_fn(ictx: tf.distribute.InputContext):
            per_pipeline = ictx.num_replicas_in_sync // ictx.num_input_pipelines
            return self._pipeline(plan, start, ictx.num_replicas_in_sync, ictx.input_pipeline_id * per_pipeline,
                                  per_pipeline)
        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _loss_and_grads(self, x, grams, variables, factor=None, warp=()):
        """The terms of the batch ``x`` and the gradients of ``total · factor``; ``warp``: the
        temporal term's perturbation as tensors (:meth:`_temporal_inputs`), appended as a fifth
        term ``temporal`` (its weighted value, also in ``total``)."""
        loss = self.preset.fast_loss
        fx = {k: tf.stop_gradient(v) for k, v in self.vgg(x).items() if k in loss.content_layers}
        with tf.GradientTape() as tape:
            y = self.net(x, training=True)
            terms = L.total_loss(self.vgg(y), y, loss, fx, grams)
            if warp:
                from .temporal import temporal_loss_tensors
                lt = temporal_loss_tensors(lambda a: self.net(a, training=True), x, *warp, y=y)
                wt = tf.cast(self.preset.training.temporal_weight * tf.cast(lt, tf.float64), terms.dtype)
                terms = tf.concat([terms[:1] + wt, terms[1:], wt[None]], 0)
            objective = terms[0] if factor is None else terms[0] * tf.cast(factor, terms.dtype)
        return terms, tape.gradient(objective, variables)

    def _make_dist_step(self, opt: TorchAdam, variables, grams, element_spec, B: int):
        """One global step under the strategy: each replica computes the loss of its shard
        weighted by ``n_r / N`` (N readable images in the global batch), the weighted gradients
        are summed over replicas (= the gradient of the global batch mean, exactly what one
        process computes), and the one Adam update is applied to the mirrored variables.
        Returns ``(global mean loss terms, global bad-slot mask + [N])`` on the host side."""
        strategy = self.strategy
        SUM = tf.distribute.ReduceOp.SUM
        if self.precision == "fp16":
            raise RestyError("precision='fp16' (dynamic loss scaling) is not supported with a distribution "
                             "strategy yet; use precision='bf16' or None")

        def replica_fn(x, bad, n):
            ctx = tf.distribute.get_replica_context()
            meta = ctx.all_reduce(SUM, tf.concat([tf.cast(bad, tf.float64), tf.cast(n, tf.float64)[None]], 0))
            total_n = meta[B]
            w = tf.cast(n, tf.float64) / tf.maximum(total_n, 1.0)
            terms, g = self._loss_and_grads(x, grams, variables, w)
            g = ctx.all_reduce(SUM, g)
            tv = ctx.all_reduce(SUM, tf.cast(terms, tf.float64) * w)
            return g, tv, meta

        def first(v):
            return strategy.experimental_local_results(v)[0]

        @tf.function(autograph=False, input_signature=[element_spec])
        def step(elem):
            x, bad, n, _ = elem
            g, tv, meta = strategy.run(replica_fn, args=(x, bad, n))
            g = [first(gi) for gi in g]
            meta = first(meta)

            def apply():
                opt.apply(g)
                return tf.constant(True)
            tf.cond(meta[B] > 0, apply, lambda: tf.constant(False))
            return first(tv), meta

        return step

    def _make_train_step(self, opt: TorchAdam, variables, grams, size: int):
        fp16 = self.precision == "fp16"
        scale = tf.Variable(2.0 ** 15, trainable=False, dtype=tf.float32) if fp16 else None
        self._loss_scale = scale

        # One trace for the whole run: the batch dimension is dynamic (a batch shrinks when an
        # item is unreadable), the spatial size static (the loss factors are then constants,
        # which XLA needs).
        # The temporal term's warps (resty.temporal.plan_arrays) and noise are inputs of the step.
        hw = size * size
        warp_spec = [tf.TensorSpec([None, 4, hw], tf.int64), tf.TensorSpec([None, 4, hw], tf.float64),
                     tf.TensorSpec([None, hw], tf.float64), tf.TensorSpec([None, size, size, 3], tf.float32)] \
            if self.preset.training.temporal_weight else []

        @tf.function(jit_compile=self.jit_compile, autograph=False,
                     input_signature=[tf.TensorSpec([None, size, size, 3], self.tf_dtype)] + warp_spec)
        def step(x, *warp):
            terms, g = self._loss_and_grads(x, grams, variables, scale, warp=warp)
            if fp16:
                # Dynamic loss scaling: float16 gradients underflow without it.  A step with
                # non-finite gradients is skipped and the scale halved (torch's GradScaler).
                g = [gi / scale for gi in g]
                ok = tf.reduce_all([tf.reduce_all(tf.math.is_finite(gi)) for gi in g])

                def apply_ok():
                    opt.apply(g)
                    return tf.constant(True)

                def skip():
                    scale.assign(scale / 2.0)
                    return tf.constant(False)
                tf.cond(ok, apply_ok, skip)
            else:
                opt.apply(g)
            return tf.cast(terms, tf.float64)

        return step

    def _temporal_inputs(self, seed: int, step: int, x) -> tuple:
        """The temporal term's perturbation of training step ``step`` (resty.temporal), as the
        arrays the traced step takes; () when the preset's temporal_weight is 0."""
        tc = self.preset.training
        pert = training_perturbation(tc, seed, step, int(x.shape[0]), int(x.shape[1]), int(x.shape[2]))
        if pert is None:
            return ()
        plans, noise = pert
        return (*plan_arrays(plans), noise)

    # ------------------------------------------------------------------ inference
    def _writes_files(self) -> bool:
        return tdist.should_checkpoint(self.strategy)     # multi-worker: only the chief writes

    def _weights_key(self) -> bytes:
        # TF variables carry no version counter: a digest of their bytes, cheap beside the
        # inference it guards.
        h = hashlib.blake2b(digest_size=16)
        style = getattr(self.net, "style_weights", None)   # an input of the ONNX path, not a weight
        for v in self.net.weights:
            if style is not None and v is style:
                continue
            h.update(np.ascontiguousarray(v.numpy()).tobytes())
        return h.digest()

    def _forward(self, batch: np.ndarray, full_precision: bool) -> np.ndarray:
        x = np.asarray(batch, self.tf_dtype.as_numpy_dtype)
        if full_precision:
            # A full-precision twin of the net (same weights) for a batch that overflowed.
            with tf.device(self.device):
                twin = TransformerNet(self.net.spec, "random:0", dtype=self.dtype, device=self.device)
                twin.load_canonical(self.net.state_dict_canonical())
                if twin.spec.conditional:
                    twin.set_style(self.net.get_style())
                return np.clip(tf.cast(twin(tf.convert_to_tensor(x), training=False), self.tf_dtype).numpy(), 0, 1)
        if self._infer is None:
            net = self.net

            # One trace for every image size (H, W unknown): a folder of photos of different
            # sizes must not pay a retrace per new shape.  XLA compiles per concrete shape anyway.
            @tf.function(jit_compile=self.jit_compile, autograph=False,
                         input_signature=[tf.TensorSpec([None, None, None, 3], self.tf_dtype)])
            def infer(x):
                return tf.clip_by_value(tf.cast(net(x, training=False), self.tf_dtype), 0.0, 1.0)
            self._infer = infer
        with tf.device(self.device):
            return self._infer(tf.convert_to_tensor(x)).numpy()

    # ------------------------------------------------------------------ files
    def export(self, path, format: str = "savedmodel") -> Path:
        """Export the transformer for serving: ``"savedmodel"`` (a SavedModel directory, its
        ``serving_default`` signature mapping ``images`` (B, H, W, 3) float32 RGB [0, 1] to
        ``stylized``; loads without Resty) or ``"keras"`` (a ``.keras`` file; loading it needs
        ``resty_tf`` imported).  See resty_tf.export."""
        from .export import _export_network
        return _export_network(self.net, path, format)
