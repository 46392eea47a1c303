"""Johnson et al. 2016 on TensorFlow: train a feed-forward transformer, then stylise in one pass.

Data, batch order, crops, skipped-file accounting and the checkpoint layout are the core's
(:mod:`resty.common`) and follow ``resty_torch.fast`` decision for decision, so a run gives
the same batches in either backend, after a resume, with any number of loader threads.
Images are decoded and resized by the core (Pillow) inside a ``tf.data`` pipeline
(``tf.numpy_function`` in a parallel, order-preserving ``map`` plus ``prefetch``), never by
``tf.image``.
"""
from __future__ import annotations

import contextlib
import hashlib
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from resty import checkpoints, inference, inputs, runtime, training_data
from resty import distributed as rdist
from resty import weights as W
from resty.errors import RestyError, TrainingError
from resty.images import resize_longest
from resty.onnx_runtime import CpuFastPath
from resty.presets import Preset, get as get_preset, resolve

from . import distributed as tdist
from . import losses as L
from .device import dtype_policy, resolve_device
from .optim import TorchAdam
from .transformer import TransformerNet
from .vgg import VGGFeatures

__all__ = ["FastStylizer"]

TERMS = ("total", "content", "style", "tv")


class FastStylizer:
    """Feed-forward style transfer (Johnson et al. 2016 with instance norm); see
    docs/BACKEND_API.md.  The VGG loss network is only built when :meth:`fit` needs it, so a
    trained model loads and stylises without ImageNet weights.  ``compile=True`` runs the
    training and inference steps with XLA (``tf.function(jit_compile=True)``).  ``fast=True``:
    XLA on a GPU; on the CPU :meth:`stylize` runs through ONNX Runtime when onnxruntime is
    installed and the spec and options allow (resty.onnx_runtime.CpuFastPath, the same path as
    resty_torch; ``inference_engine`` says which ran, ``fast_path_note`` why not)."""

    def __init__(self, preset="johnson2016", weights="imagenet", device=None, dtype: str = "float32",
                 transformer_weights=None, precision=None, compile: bool = False, strategy=None,
                 fast: bool = False):
        # First: a MultiWorkerMirroredStrategy (TF_CONFIG) must exist before any TF operation.
        self.strategy = tdist.resolve_strategy(strategy)
        self.preset: Preset = resolve(preset)
        self.device = resolve_device(device)
        self.dtype = dtype
        self.precision = precision
        dtype_policy(dtype, precision)          # validates the pair early
        if "CPU" in str(self.device).upper():
            runtime.warn_cpu_half_precision(precision)
        self.tf_dtype = tf.float64 if dtype == "float64" else tf.float32
        self.weights = weights
        # fast=True (the option resty_torch also has): XLA on a GPU; on the CPU see below.
        self.jit_compile = bool(compile) or (bool(fast) and "GPU" in str(self.device).upper())
        tw = transformer_weights
        if tw is None:
            tw = f"random:{self.preset.training.seed}"
        if isinstance(tw, W.WeightSet) and tw.spec != self.preset.transformer:
            self.preset = self.preset.replace(transformer=tw.spec)
        with self._scope():
            self.net = TransformerNet(self.preset.transformer, tw, dtype=dtype, device=self.device,
                                      precision=precision)
        # fast=True on the CPU: stylize() runs the net as resty.onnx_runtime's rewritten graph on
        # ONNX Runtime (2-2.5x TF's own float32 inference at 512 px on 2 cores; rebuilt when the
        # weights change), exactly as resty_torch does.  Training stays in TensorFlow.
        self._cpu_fast, self.fast_path_note = None, None
        if fast and "CPU" in str(self.device).upper():
            self._cpu_fast, self.fast_path_note = CpuFastPath.for_stylizer(self.preset.transformer, {
                f"precision={precision!r}": precision is not None,
                f"dtype={dtype!r}": dtype != "float32",
                "compile=True was asked for": bool(compile)})
        self._vgg: Optional[VGGFeatures] = None
        self._infer = None
        self.history: List[Dict] = []
        self.skipped: List[str] = []
        self.skipped_count = 0
        self.step = 0

    # ------------------------------------------------------------------ helpers
    def _scope(self):
        """Where variables are created: the strategy's scope (mirrored variables), if any."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @property
    def vgg(self) -> VGGFeatures:
        if self._vgg is None:
            p = self.preset
            with self._scope():
                self._vgg = VGGFeatures(p.vgg.arch, self.weights, p.vgg.pooling, layers=p.fast_loss.all_layers,
                                        dtype=self.dtype, device=self.device, preprocessing=p.preprocessing_name,
                                        precision=self.precision)
        return self._vgg

    def _style_grams(self, style, style_weights, style_size) -> Dict[str, tf.Tensor]:
        loss = self.preset.fast_loss
        styles, blend = inputs.prepare_styles(style, style_weights)
        grams: Dict[str, tf.Tensor] = {}
        for s, w in zip(styles, blend):
            if style_size is not None:
                s = resize_longest(s, style_size)
            f = self.vgg(tf.convert_to_tensor(s[None].astype(self.tf_dtype.as_numpy_dtype)))
            for l in loss.style_layers:
                g = L.gram(f[l], loss.gram)[0] * tf.constant(w, L.loss_dtype(f[l]))
                grams[l] = g if l not in grams else grams[l] + g
        return grams

    def _variables(self):
        cv = self.net.canonical_variables()
        return list(cv.keys()), list(cv.values())

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_tensors(self, opt: TorchAdam, names) -> Dict[str, np.ndarray]:
        t = {f"net.{k}": v for k, v in self.net.state_dict_canonical().items()}
        m = {n: self.net.to_canonical_layout(n, a.numpy()) for n, a in zip(names, opt.m)}
        v = {n: self.net.to_canonical_layout(n, a.numpy()) for n, a in zip(names, opt.v)}
        t.update(checkpoints.adam_state_to_tensors(int(opt.step.numpy()), m, v))
        return t

    def _save_checkpoint(self, ckdir, step, opt, names, sched, total, settings, keep) -> Path:
        epoch, pos = sched.epoch_position(step)
        meta = {"step": step, "epoch": epoch, "position": pos, "total_steps": total,
                "settings": settings, "rng": {}, "history": self.history, "skipped": self.skipped,
                "skipped_count": self.skipped_count, "preset": self.preset.to_dict(),
                "backend": "tf", "dtype": self.dtype}
        # No framework RNG is used in training (crops and order are pure functions of the
        # seed and step), so "rng" is empty: nothing else is needed to resume exactly.
        return checkpoints.save_checkpoint(ckdir, step, self._checkpoint_tensors(opt, names), meta, keep=keep)

    def _restore(self, path, opt: TorchAdam, names, settings) -> int:
        tensors, meta = checkpoints.load_checkpoint(path)
        old = meta.get("settings", {})
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            raise RestyError(f"{path}: cannot resume: the checkpoint was made with different settings "
                             f"({', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in diff.items())})")
        self.net.load_canonical({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        step, m, v = checkpoints.adam_state_from_tensors(tensors)
        if m:
            opt.set_state(step, [self.net.from_canonical_layout(n, m[n]) for n in names],
                          [self.net.from_canonical_layout(n, v[n]) for n in names])
        self.history = list(meta.get("history", []))
        self.skipped = list(meta.get("skipped", []))
        self.skipped_count = int(meta.get("skipped_count", 0))
        return int(meta["step"])

    # ------------------------------------------------------------------ data
    def _dataset(self, items, sched, size, seed, start, total, workers, max_bs):
        """tf.data over the steps ``start .. total-1``: each element is one whole batch
        ``(crops (n, S, S, 3), bad-slot mask (max_bs,), step)``; unreadable items are left out
        of the crops and flagged in the mask."""
        np_dtype = self.tf_dtype.as_numpy_dtype

        def load(step):
            step = int(step)
            idx = sched.batch(step)
            crops, bad = [], np.zeros(max_bs, np.bool_)
            for slot, i in enumerate(idx):
                c = training_data.load_training_item(items[i], size, seed, step, slot)
                if c is None:
                    bad[slot] = True
                else:
                    crops.append(c)
            x = np.stack(crops).astype(np_dtype) if crops else np.zeros((0, size, size, 3), np_dtype)
            return x, bad

        def tf_load(step):
            x, bad = tf.numpy_function(load, [step], [self.tf_dtype, tf.bool], stateful=False)
            x.set_shape([None, size, size, 3])
            bad.set_shape([max_bs])
            return x, bad, step

        ds = tf.data.Dataset.range(start, total)
        if workers:
            # Parallel decoding, results kept in step order (deterministic=True).
            ds = ds.map(tf_load, num_parallel_calls=workers, deterministic=True)
        else:
            ds = ds.map(tf_load)
        opts = tf.data.Options()
        opts.threading.private_threadpool_size = max(1, workers) if workers else 0
        return ds.with_options(opts).prefetch(max(2, workers))

    def _dist_dataset(self, items, sched, size, seed, start, total, workers):
        """The distributed pipeline: ``distribute_datasets_from_function``, each input pipeline
        yielding, for every step, one element per local replica: ``(crops, bad-slot mask of
        the global batch (this replica's slots only), readable count, step)``.  Replica ``r``
        of ``R`` gets the contiguous slots ``shard_bounds(B, r, R)`` of the global batch, so the
        union over replicas is exactly the single-process batch of that step.  A replica with
        nothing readable gets one zero image and count 0 (weight 0 in the loss)."""
        np_dtype = self.tf_dtype.as_numpy_dtype
        B = sched.batch_size

        def dataset_fn(ictx: tf.distribute.InputContext):
            R = ictx.num_replicas_in_sync
            rpp = R // ictx.num_input_pipelines          # replicas fed by this pipeline
            first = ictx.input_pipeline_id * rpp

            def load(e):
                step, k = divmod(int(e), rpp)
                step += start
                lo, hi = rdist.shard_bounds(B, first + k, R)
                idx = sched.batch(step)
                crops, bad = [], np.zeros(B, np.bool_)
                for slot in range(lo, min(hi, len(idx))):
                    c = training_data.load_training_item(items[idx[slot]], size, seed, step, slot)
                    if c is None:
                        bad[slot] = True
                    else:
                        crops.append(c)
                n = len(crops)
                x = np.stack(crops).astype(np_dtype) if crops else np.zeros((1, size, size, 3), np_dtype)
                return x, bad, np.int32(n), np.int64(step)

            def tf_load(e):
                x, bad, n, step = tf.numpy_function(load, [e], [self.tf_dtype, tf.bool, tf.int32, tf.int64],
                                                    stateful=False)
                x.set_shape([None, size, size, 3])
                bad.set_shape([B])
                n.set_shape([])
                step.set_shape([])
                return x, bad, n, step

            ds = tf.data.Dataset.range(0, (total - start) * rpp)
            if workers:
                ds = ds.map(tf_load, num_parallel_calls=workers, deterministic=True)
            else:
                ds = ds.map(tf_load)
            opts = tf.data.Options()
            opts.threading.private_threadpool_size = max(1, workers) if workers else 0
            opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            return ds.with_options(opts).prefetch(max(2, workers) * rpp)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _make_dist_step(self, opt: TorchAdam, variables, grams, element_spec, B: int):
        """One global step under the strategy: each replica computes the loss of its shard
        weighted by ``n_r / N`` (N readable images in the global batch), the weighted gradients
        are summed over replicas (= the gradient of the global batch mean, exactly what one
        process computes), and the one Adam update is applied to the mirrored variables.
        Returns ``(global mean loss terms, global bad-slot mask + [N])`` on the host side."""
        loss = self.preset.fast_loss
        vgg, net, strategy = self.vgg, self.net, self.strategy
        SUM = tf.distribute.ReduceOp.SUM
        if self.precision == "fp16":
            raise RestyError("precision='fp16' (dynamic loss scaling) is not supported with a distribution "
                             "strategy yet; use precision='bf16' or None")

        def replica_fn(x, bad, n):
            ctx = tf.distribute.get_replica_context()
            meta = ctx.all_reduce(SUM, tf.concat([tf.cast(bad, tf.float64), tf.cast(n, tf.float64)[None]], 0))
            total_n = meta[B]
            w = tf.cast(n, tf.float64) / tf.maximum(total_n, 1.0)
            fx = {l: tf.stop_gradient(v) for l, v in vgg(x).items() if l in loss.content_layers}
            with tf.GradientTape() as tape:
                y = net(x, training=True)
                terms = L.total_loss(vgg(y), y, loss, fx, grams)
                objective = terms["total"] * tf.cast(w, terms["total"].dtype)
            g = tape.gradient(objective, variables)
            g = ctx.all_reduce(SUM, g)
            tv = ctx.all_reduce(SUM, tf.stack([tf.cast(terms[k], tf.float64) for k in TERMS]) * w)
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

    # ------------------------------------------------------------------ training
    def _make_train_step(self, opt: TorchAdam, variables, grams, size: int):
        loss = self.preset.fast_loss
        vgg, net = self.vgg, self.net
        fp16 = self.precision == "fp16"
        scale = tf.Variable(2.0 ** 15, trainable=False, dtype=tf.float32) if fp16 else None
        self._loss_scale = scale

        # One trace for the whole run: the batch dimension is dynamic (a batch shrinks when an
        # item is unreadable), the spatial size static (the loss factors are then constants,
        # which XLA needs).
        @tf.function(jit_compile=self.jit_compile, autograph=False,
                     input_signature=[tf.TensorSpec([None, size, size, 3], self.tf_dtype)])
        def step(x):
            fx = {l: tf.stop_gradient(v) for l, v in vgg(x).items() if l in loss.content_layers}
            with tf.GradientTape() as tape:
                y = net(x, training=True)
                terms = L.total_loss(vgg(y), y, loss, fx, grams)
                objective = terms["total"] * scale if fp16 else terms["total"]
            g = tape.gradient(objective, variables)
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
            return tf.stack([tf.cast(terms[k], tf.float64) for k in TERMS])

        return step

    def fit(self, images, style, *, steps=None, epochs=None, batch_size=None, image_size=None,
            checkpoint_dir=None, checkpoint_every=None, resume=False, seed=None, num_workers=None,
            progress=False, callback=None, lr=None, style_weights=None) -> Dict[str, Any]:
        """Train the transformer on ``images`` (a folder, a list of paths, or an iterable of
        arrays) to reproduce ``style``.  Returns a summary dict (steps, history, skipped, ...).

        Batches are a pure function of ``(seed, step)``, so ``resume=True`` continues from the
        newest checkpoint in ``checkpoint_dir`` to the same weights an uninterrupted run
        reaches.  Unreadable images are skipped and listed in ``skipped``.
        ``callback(step, losses, None)`` returning True stops (after writing a checkpoint when a
        directory is given).  A non-finite loss raises TrainingError naming the step."""
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

        strategy = self.strategy
        B = sched.batch_size
        with strategy.scope() if strategy is not None else tf.device(self.device):
            names, variables = self._variables()
            opt = TorchAdam(tc.adam, variables, lr=lr)
            start = 0
            if not resume:
                self.history, self.skipped, self.skipped_count = [], [], 0
            elif checkpoint_dir is not None and checkpoints.latest_checkpoint(checkpoint_dir) is not None:
                # Every worker reads the same checkpoint (a shared folder): resuming works with
                # any number of workers, the shards of each global batch are recomputed.
                start = self._restore(checkpoints.latest_checkpoint(checkpoint_dir), opt, names, settings)
            grams = self._style_grams(style, style_weights, tc.style_size)
            if strategy is None:
                train_step = self._make_train_step(opt, variables, grams, size)
                ds = self._dataset(items, sched, size, seed, start, total, workers, B)
            else:
                ds = self._dist_dataset(items, sched, size, seed, start, total, workers)
                train_step = self._make_dist_step(opt, variables, grams, ds.element_spec, B)
            main = tdist.should_checkpoint(strategy)

            n = max(0, total - start)
            pending: List[tuple] = []          # (step, terms tensor or None) not yet on the host
            last_ck = start
            t0 = time.perf_counter()
            seen = 0
            stopped = False
            self.step = start

            def note_skipped(step, slots):
                idx = sched.batch(step)
                names_bad = [training_data.item_name(items[idx[j]], idx[j]) for j in slots if j < len(idx)]
                self.skipped_count += len(names_bad)
                self.skipped.extend(k for k in names_bad if k not in self.skipped)

            def flush():
                nonlocal seen
                for s, t in pending:
                    if isinstance(t, tuple):          # distributed: (global terms, global mask + [N])
                        t, meta = t
                        meta = meta.numpy()
                        gbad = np.flatnonzero(meta[:B] > 0)
                        if len(gbad):
                            note_skipped(s - 1, gbad)
                        seen += int(round(meta[B]))
                        if meta[B] == 0:
                            t = None
                    if t is None:
                        self.history.append({"step": s, "skipped_batch": True})
                        continue
                    r = t.numpy()
                    if not np.isfinite(r[0]):
                        pending.clear()
                        raise TrainingError(runtime.nonfinite_message(float(r[0]), s))
                    self.history.append({"step": s, **{k: float(v) for k, v in zip(TERMS, r)}})
                pending.clear()

            def checkpoint(step):
                if main:
                    self._save_checkpoint(checkpoint_dir, step, opt, names, sched, total, settings,
                                          tc.keep_checkpoints)
                tdist.barrier(strategy)        # nobody reads it before the chief finished

            # SIGTERM: stop at a step boundary, checkpoint, then die of it (single process; under
            # a tf.distribute strategy the workers would have to agree first, and it kills at once).
            with runtime.SigtermFlag(checkpoint_dir is not None and strategy is None) as term, \
                    runtime.Progress(n, progress and main, desc="fit", unit="step") as bar:
                for elem in ds:
                    if term.hit:
                        stopped = True
                        break
                    if strategy is None:
                        x, bad, s = elem
                        s = int(s)
                        bad = bad.numpy()
                        if bad.any():
                            note_skipped(s, np.flatnonzero(bad))
                        done = s + 1
                        if x.shape[0] == 0:
                            pending.append((done, None))
                        else:
                            seen += int(x.shape[0])
                            pending.append((done, train_step(x)))
                    else:
                        s = int(strategy.experimental_local_results(elem[3])[0])
                        done = s + 1
                        pending.append((done, train_step(elem)))
                    due_ck = checkpoint_dir is not None and done % ck_every == 0
                    if callback is not None or due_ck or done % tc.log_every == 0 or done == total:
                        k = len(pending)
                        flush()
                        last = self.history[-1] if self.history else {}
                        post = {t: last[t] for t in TERMS if t in last}
                        el = time.perf_counter() - t0
                        if el > 0:
                            post["img/s"] = seen / el
                        bar.update(k, post)
                    self.step = done
                    if due_ck:
                        checkpoint(done)
                        last_ck = done
                    if callback is not None:
                        last = self.history[-1] if self.history else {}
                        stop = bool(callback(done, {t: last[t] for t in TERMS if t in last}, None))
                        if tdist.any_replica(strategy, stop):     # every worker stops at the same step
                            stopped = True
                            break
            flush()
            if checkpoint_dir is not None and self.step > last_ck:
                checkpoint(self.step)
        seconds = time.perf_counter() - t0
        if term.hit:
            term.redeliver(self.step, checkpoint_dir)   # dies of SIGTERM now, the checkpoint written
        return {"steps": self.step, "start_step": start, "total_steps": total, "stopped": stopped,
                "history": self.history, "skipped": list(self.skipped), "skipped_count": self.skipped_count,
                "images_seen": seen, "seconds": seconds,
                "images_per_second": seen / seconds if seconds > 0 else float("nan"),
                "world_size": tdist.world_size(strategy), "rank": rdist.process_info().rank,
                "checkpoint": str(checkpoints.latest_checkpoint(checkpoint_dir)) if checkpoint_dir else None}

    # ------------------------------------------------------------------ inference
    @property
    def inference_engine(self) -> str:
        """What :meth:`stylize` runs on: ``"onnxruntime"`` (``fast=True`` on the CPU, see
        ``fast_path_note`` when not) or ``"tensorflow"``."""
        return "onnxruntime" if self._cpu_fast is not None else "tensorflow"

    def _weights_key(self) -> bytes:
        # TF variables carry no version counter: a digest of their bytes (~5 ms for restynet's
        # 1.7M parameters, against ~150+ ms for the inference it guards).
        h = hashlib.blake2b(digest_size=16)
        for v in self.net.weights:
            h.update(np.ascontiguousarray(v.numpy()).tobytes())
        return h.digest()

    def _canonical_weightset(self) -> W.WeightSet:
        return W.WeightSet(self.net.state_dict_canonical(), "transformer", spec=self.preset.transformer)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._cpu_fast is not None:
            y = self._cpu_fast.run(np.asarray(batch, np.float32).transpose(0, 3, 1, 2), self._weights_key(),
                                   self._canonical_weightset)
            return np.clip(y.transpose(0, 2, 3, 1), 0.0, 1.0)
        if self._infer is None:
            net = self.net

            # One trace for every image size (H, W unknown): a folder of photos of different
            # sizes must not pay a retrace (~0.5 s on a CPU) per new shape.  XLA compiles per
            # concrete shape anyway.
            spec = [tf.TensorSpec([None, None, None, 3], self.tf_dtype)]

            @tf.function(jit_compile=self.jit_compile, input_signature=spec, autograph=False)
            def infer(x):
                return tf.clip_by_value(tf.cast(net(x, training=False), self.tf_dtype), 0.0, 1.0)
            self._infer = infer
        with tf.device(self.device):
            y = self._infer(tf.convert_to_tensor(np.asarray(batch, self.tf_dtype.as_numpy_dtype)))
        out = y.numpy()
        if self.precision is not None and not np.isfinite(out).all():
            # float16 tops out at 65504: a trained net whose activations exceed it gives inf/NaN.
            # Recompute this batch with a full-precision twin of the net (same weights), as
            # resty_torch does, rather than return a broken image.
            warnings.warn(f"{self.precision} inference gave non-finite values (overflow); this batch was "
                          f"recomputed in {self.dtype} (use precision='bf16' or None for this model)",
                          RuntimeWarning, stacklevel=3)
            with tf.device(self.device):
                twin = TransformerNet(self.net.spec, "random:0", dtype=self.dtype, device=self.device)
                twin.load_canonical(self.net.state_dict_canonical())
                y = twin(tf.convert_to_tensor(np.asarray(batch, self.tf_dtype.as_numpy_dtype)), training=False)
            out = np.clip(tf.cast(y, self.tf_dtype).numpy(), 0.0, 1.0)
        return out

    def stylize(self, images, *, preserve_color=False, tile=None, overlap=32, batch_size=None):
        """Stylise one image (-> H×W×3 float32) or several (a list or a B×H×W×3 array -> a
        list, or an array for an array).  Each output has its input's size.  ``tile`` (px)
        runs large images in overlapping tiles blended with linear ramps."""
        return inference.stylize_images(images, self._run, preserve_color=preserve_color, tile=tile,
                                     overlap=overlap, batch_size=batch_size)

    # ------------------------------------------------------------------ files
    def save(self, path, *, overwrite=False) -> Path:
        """Canonical safetensors file (resty.weights) with the TransformerSpec and the preset
        JSON in the metadata: loadable by either backend."""
        if not tdist.should_checkpoint(self.strategy):
            return Path(path)   # multi-worker: only the chief writes (same weights everywhere)
        tensors = {k: np.asarray(v, np.float32) if self.dtype != "float64" else v
                   for k, v in self.net.state_dict_canonical().items()}
        ws = W.WeightSet(tensors, "transformer",
                         source=f"resty_tf FastStylizer ({self.preset.name})", spec=self.preset.transformer,
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

    def export(self, path, format: str = "savedmodel") -> Path:
        """Export the trained transformer for serving.

        ``format="savedmodel"``: a TensorFlow SavedModel directory whose ``serving_default``
        signature maps ``images`` (B, H, W, 3) float32 RGB [0, 1] (any H, W) to ``stylized``
        (clamped to [0, 1]); loadable with ``tf.saved_model.load`` without Resty.
        ``format="keras"``: a ``.keras`` file (``keras.saving.load_model`` needs ``resty_tf``
        imported, which registers the custom layers).
        """
        p = Path(path)
        if format == "savedmodel":
            if p.exists():
                raise RestyError(f"{p}: already exists; choose a new directory for the SavedModel")
            module = tf.Module()
            module.net = self.net
            net = self.net

            @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")], autograph=False)
            def serve(images):
                y = net(tf.cast(images, net.compute_dtype), training=False)
                return {"stylized": tf.clip_by_value(tf.cast(y, tf.float32), 0.0, 1.0)}
            module.serve = serve
            tf.saved_model.save(module, str(p), signatures={"serving_default": serve})
            return p
        if format == "keras":
            if p.suffix != ".keras":
                raise RestyError(f"{p}: a Keras export needs the .keras extension")
            if p.exists():
                raise RestyError(f"{p}: already exists")
            self.net.save(str(p))
            return p
        raise RestyError(f"export format: got {format!r}; allowed: 'savedmodel', 'keras'")
