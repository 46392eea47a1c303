"""AdaIN (Huang & Belongie 2017) in TensorFlow: the framework operations behind
resty.adain.AdaINStylizerBase (encoder, AdaIN op, decoder, loss, one training step as a
``tf.function``).  NHWC, kernels HWIO; canonical names and layouts (OIHW) at the boundary.  Every
convention comes from resty.specs.AdaINSpec; the oracle is resty.reference.adain_*."""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from resty.losses import adain_loss_terms, adain_transfer, sigma_form
from resty.adain import AdaINSessionBase, AdaINStylizerBase, encoder_tensors
from resty.distributed import process_info
from resty.errors import RestyError
from resty.fast import TrainingPlan
from resty.specs import ADAIN_ENCODER_LAYERS, AdaINSpec, adain_decoder_layers, vgg_truncate
from resty.runtime import check_dtype
from resty.weights import WeightSet, from_keras_kernel, to_keras_kernel

from . import distributed as tdist
from .device import resolve_device
from .fast import adam_state, load_adam_state
from .optim import TorchAdam

__all__ = ["AdaINEncoder", "AdaINDecoder", "AdaINStylizer", "mean_std", "adain", "adain_loss"]


def _dt(dtype) -> tf.DType:
    return tf.float64 if str(dtype) in ("float64", "tf.float64", "<dtype: 'float64'>") else tf.float32


def _pad(x: tf.Tensor, mode: str) -> tf.Tensor:
    return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT" if mode == "reflect" else "CONSTANT")


def mean_std(x: tf.Tensor, convention: str, eps: float) -> Tuple[tf.Tensor, tf.Tensor]:
    """Per sample and channel over H×W: ``(μ, σ)`` (N, 1, 1, C) by a resty.specs.SIGMA_CONVENTIONS name."""
    mu = tf.reduce_mean(x, axis=(1, 2), keepdims=True)
    div, e = sigma_form(convention, tf.cast(tf.shape(x)[1] * tf.shape(x)[2], x.dtype), eps)
    return mu, tf.sqrt(tf.reduce_sum(tf.square(x - mu), axis=(1, 2), keepdims=True) / div + e)


def adain(content: tf.Tensor, style: tf.Tensor, spec: AdaINSpec) -> tf.Tensor:
    """resty.losses.adain_transfer in TensorFlow."""
    return adain_transfer(content, style, spec, lambda x, c: mean_std(x, c, spec.eps))


def adain_loss(g_feats: Mapping[str, tf.Tensor], target: tf.Tensor, style_feats: Mapping[str, tf.Tensor],
               spec: AdaINSpec) -> tf.Tensor:
    """``[total, content, style, 0]`` (resty.losses.adain_loss_terms)."""
    t = adain_loss_terms(g_feats, target, style_feats, spec, mean_std=lambda x, c: mean_std(x, c, spec.eps),
                         reduce_mean=tf.reduce_mean, reduce_sum=tf.reduce_sum,
                         batch=lambda d: tf.cast(tf.shape(d)[0], d.dtype), zero=tf.zeros((), target.dtype))
    return tf.stack([*t, tf.zeros_like(t[0])])


class AdaINEncoder:
    """VGG19 to relu4_1 after the 1×1 ``conv0`` (the preprocessing, as vgg_normalised), frozen
    (constants); ``weights``: a VGG19 WeightSet (resty.adain.resolve_encoder_weights)."""

    def __init__(self, weights: WeightSet, spec: AdaINSpec, dtype="float32", device=None):
        self.spec, self.dtype = spec, _dt(dtype)
        self.device = resolve_device(device)
        with tf.device(self.device):
            self.k = {k[:-7]: tf.constant(to_keras_kernel(v), self.dtype)
                      for k, v in encoder_tensors(weights).items() if k.endswith(".weight")}
            self.b = {k[:-5]: tf.constant(np.asarray(v), self.dtype)
                      for k, v in encoder_tensors(weights).items() if k.endswith(".bias")}
        self._table = vgg_truncate("vgg19", ["relu4_1"])

    def __call__(self, x01: tf.Tensor, layers: Sequence[str] = ADAIN_ENCODER_LAYERS) -> Dict[str, tf.Tensor]:
        h = tf.nn.conv2d(x01, self.k["conv0"], 1, "VALID") + self.b["conv0"]
        out = {}
        deepest = ADAIN_ENCODER_LAYERS[max(ADAIN_ENCODER_LAYERS.index(l) for l in layers)]
        for layer in self._table:
            if layer.kind == "conv":
                h = tf.nn.conv2d(_pad(h, self.spec.encoder_padding), self.k[layer.name], 1, "VALID") + self.b[layer.name]
            elif layer.kind == "relu":
                h = tf.nn.relu(h)
                if layer.name in layers:
                    out[layer.name] = h
                if layer.name == deepest:
                    break
            else:
                h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        return out


class AdaINDecoder:
    """The decoder mirroring the encoder (resty.specs.adain_decoder_layers): tf.Variables (HWIO);
    canonical names ``conv4_1.weight`` … ``conv1_1.bias`` (OIHW) at the boundary."""

    def __init__(self, spec: AdaINSpec, weights: WeightSet, dtype="float32", device=None):
        self.spec, self.dtype = spec, _dt(dtype)
        self.layers = adain_decoder_layers(spec)
        self.device = resolve_device(device)
        with tf.device(self.device):
            self.vars = {}
            for name, *_ in self.layers:
                self.vars[f"{name}.weight"] = tf.Variable(to_keras_kernel(weights.tensors[f"{name}.weight"]).astype(
                    self.dtype.as_numpy_dtype), name=f"{name}_kernel")
                self.vars[f"{name}.bias"] = tf.Variable(np.asarray(weights.tensors[f"{name}.bias"]).astype(
                    self.dtype.as_numpy_dtype), name=f"{name}_bias")

    def __call__(self, t: tf.Tensor) -> tf.Tensor:
        h = t
        last = len(self.layers) - 1
        for i, (name, _, _, up) in enumerate(self.layers):
            h = tf.nn.conv2d(_pad(h, self.spec.decoder_padding), self.vars[f"{name}.weight"], 1, "VALID") \
                + self.vars[f"{name}.bias"]
            if i < last:
                h = tf.nn.relu(h)
            if up:
                h = tf.repeat(tf.repeat(h, 2, axis=1), 2, axis=2)
        return h

    @staticmethod
    def to_canonical_layout(name: str, a: np.ndarray) -> np.ndarray:
        return from_keras_kernel(a) if name.endswith(".weight") else np.asarray(a)

    @staticmethod
    def from_canonical_layout(name: str, a: np.ndarray) -> np.ndarray:
        return to_keras_kernel(a) if name.endswith(".weight") else np.asarray(a)

    def canonical_variables(self) -> Dict[str, tf.Variable]:
        return dict(self.vars)

    def state_dict_canonical(self) -> Dict[str, np.ndarray]:
        return {k: self.to_canonical_layout(k, v.numpy()) for k, v in self.vars.items()}

    def load_canonical(self, tensors: Mapping[str, np.ndarray]) -> None:
        for k, v in self.vars.items():
            v.assign(self.from_canonical_layout(k, np.asarray(tensors[k])).astype(self.dtype.as_numpy_dtype))


class _Session(AdaINSessionBase):
    """One ``fit``: the torch-formula Adam on the decoder's variables and a traced step; under a
    multi-worker strategy each worker trains on its share of every global batch
    (resty.adain.AdaINSessionBase.steps), the weighted gradients are summed over the workers and
    every worker applies the same update to its mirrored variables."""

    def __init__(self, owner: "AdaINStylizer", plan: TrainingPlan):
        super().__init__(owner, plan)
        strategy = owner.strategy
        if strategy is None and process_info().distributed:
            # Each process would train the whole batch alone: refused, not silently wrong.
            raise RestyError("AdaIN training in several TensorFlow processes needs their MultiWorkerMirroredStrategy "
                             "(TF_CONFIG, as resty train --nproc sets it); none is active in this process")
        self.dist = tdist.StrategyContext(strategy)
        self.handles_sigterm = strategy is None       # a strategy's workers cannot agree on a SIGTERM step
        net = owner.net
        self.names = list(net.vars)
        self.variables = [net.vars[n] for n in self.names]
        with owner._scope():
            self.opt = TorchAdam(owner.preset.training.adam, self.variables, lr=plan.lr)
            self.opt.lr = tf.Variable(float(plan.lr), dtype=tf.float64, trainable=False)
        size, dt = plan.image_size, owner.tf_dtype
        image = tf.TensorSpec([None, size, size, 3], dt)

        if strategy is None:
            @tf.function(autograph=False, input_signature=[image, image])
            def step(content, style):
                with tf.GradientTape() as tape:
                    terms = owner.train_terms(content, style)
                    total = terms[0]
                self.opt.apply(tape.gradient(total, self.variables))
                return terms
            self._step = step
            return
        SUM = tf.distribute.ReduceOp.SUM

        def replica_fn(content, style, weight):
            ctx = tf.distribute.get_replica_context()
            with tf.GradientTape() as tape:
                terms = owner.train_terms(content, style)
                objective = terms[0] * tf.cast(weight, terms.dtype)
            grads = ctx.all_reduce(SUM, tape.gradient(objective, self.variables))
            return grads, ctx.all_reduce(SUM, terms * tf.cast(weight, terms.dtype))

        @tf.function(autograph=False, input_signature=[image, image, tf.TensorSpec([], tf.float64)])
        def dist_step(content, style, weight):
            grads, terms = strategy.run(replica_fn, args=(content, style, weight))
            first = lambda v: strategy.experimental_local_results(v)[0]     # noqa: E731
            self.opt.apply([first(g) for g in grads])
            return first(terms)           # the global batch mean's terms
        self._dist_step = dist_step

    def _train(self, content, style, lr, weight=None):
        self.opt.lr.assign(lr)
        dt = self.owner.tf_dtype.as_numpy_dtype
        c, s = tf.constant(content.astype(dt)), tf.constant(style.astype(dt))
        if self.owner.strategy is None:
            with tf.device(self.owner.device):
                return self._step(c, s)
        return self._dist_step(c, s, tf.constant(1.0 if weight is None else weight, tf.float64))

    def _to_numpy(self, terms):
        return terms.numpy()

    def optimizer_state(self):
        return adam_state(self.opt, self.owner.net, self.names)

    def load_optimizer_state(self, step, exp_avg, exp_avg_sq) -> None:
        load_adam_state(self.opt, self.owner.net, self.names, step, exp_avg, exp_avg_sq)


class AdaINStylizer(AdaINStylizerBase):
    """AdaIN in TensorFlow: frozen encoder kernels as constants, the decoder's as tf.Variables (the
    API is resty.adain.AdaINStylizerBase's)."""

    backend_name = "tf"
    engine_name = "tensorflow"

    def __init__(self, preset="pytorch-adain", weights="imagenet", device=None, dtype="float32",
                 decoder_weights=None, strategy=None):
        # First: a MultiWorkerMirroredStrategy (TF_CONFIG) must exist before any TF operation.
        self.strategy = tdist.resolve_strategy(strategy)
        self.dtype = check_dtype(dtype)          # the same words as every stylizer
        enc, dec = self._setup(preset, weights, decoder_weights)
        self.device = resolve_device(device)
        self.tf_dtype = _dt(self.dtype)
        self.precision = None
        self.encoder = AdaINEncoder(enc, self.preset.adain, self.dtype, self.device)
        with self._scope():
            self.net = AdaINDecoder(self.preset.adain, dec, self.dtype, self.device)

    def _scope(self):
        """Where variables are created: the strategy's scope (mirrored variables), if any."""
        return self.strategy.scope() if self.strategy is not None else tf.device(self.device)

    def _writes_files(self) -> bool:
        return tdist.should_checkpoint(self.strategy)     # multi-worker: only the chief writes

    def _dtype_name(self) -> str:
        return self.dtype

    def _tensor(self, a: np.ndarray) -> tf.Tensor:
        a = np.asarray(a)
        return tf.constant((a[None] if a.ndim == 3 else a).astype(self.tf_dtype.as_numpy_dtype))

    def train_terms(self, content: tf.Tensor, style: tf.Tensor) -> tf.Tensor:
        """``[total, content, style, 0]`` of NHWC content/style batches (differentiable w.r.t. the decoder)."""
        spec = self.preset.adain
        fc = tf.stop_gradient(self.encoder(content, ("relu4_1",))["relu4_1"])
        fs = {k: tf.stop_gradient(v) for k, v in self.encoder(style).items()}
        t = tf.stop_gradient(adain(fc, fs["relu4_1"], spec))
        g = self.net(t)
        return adain_loss(self.encoder(g), t, fs, spec)

    def _training_session(self, plan: TrainingPlan) -> _Session:
        return _Session(self, plan)

    def _weights_key(self):
        return tuple(v.numpy().tobytes() for v in self.net.vars.values())

    def _encode(self, batch, layers=ADAIN_ENCODER_LAYERS):
        with tf.device(self.device):
            return self.encoder(self._tensor(batch), tuple(layers))

    def _adain(self, fc, fs):
        return adain(fc, fs, self.preset.adain)

    def _export_savedmodel(self, path) -> None:
        """The serving module (resty.adain.AdaINStylizerBase.export_savedmodel): the decoder's
        variables and the encoder's constants captured by one ``tf.function``, float32 at the
        boundary whatever the stylizer's dtype."""
        encoder, decoder, spec, dt = self.encoder, self.net, self.preset.adain, self.tf_dtype
        module = tf.Module()
        module.decoder_variables = list(decoder.vars.values())
        image = lambda name: tf.TensorSpec([None, None, None, 3], tf.float32, name=name)   # noqa: E731

        @tf.function(input_signature=[image("content"), image("style"), tf.TensorSpec([], tf.float32, name="alpha")],
                     autograph=False)
        def serve(content, style, alpha):
            c, s, a = tf.cast(content, dt), tf.cast(style, dt), tf.cast(alpha, dt)
            h, w = tf.shape(c)[1], tf.shape(c)[2]
            # reflect-pad to multiples of 8 (relu4_1 is 1/8 of the input), crop back after
            pad = [[0, 0], [0, tf.math.floormod(-h, 8)], [0, tf.math.floormod(-w, 8)], [0, 0]]
            fc = encoder(tf.pad(c, pad, mode="REFLECT"), ("relu4_1",))["relu4_1"]
            fs = encoder(s, ("relu4_1",))["relu4_1"]
            t = adain(fc, fs, spec) * a + fc * (1.0 - a)
            y = decoder(t)[:, :h, :w, :]
            return {"stylized": tf.cast(tf.clip_by_value(y, 0.0, 1.0), tf.float32)}

        module.serve = serve
        with tf.device("/CPU:0"):
            tf.saved_model.save(module, str(path), signatures={"serving_default": serve})

    def _load_savedmodel(self, path):
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]

        def run(content, style, alpha):
            return fn(content=tf.constant(np.asarray(content, np.float32)[None]),
                      style=tf.constant(np.asarray(style, np.float32)[None]),
                      alpha=tf.constant(float(alpha), tf.float32))["stylized"].numpy()[0]
        return run

    def _adain_regions(self, fc, styles, regions):
        C = fc.shape[-1]
        with tf.device(self.device):
            flat = tf.reshape(fc, (-1, C))                 # NHWC, batch 1: positions × channels
            out = tf.zeros_like(flat)
            for fs, region in zip(styles, regions):
                idx = np.flatnonzero(np.asarray(region).ravel())
                if idx.size:
                    part = tf.reshape(tf.gather(flat, idx), (1, -1, 1, C))
                    t = tf.reshape(adain(part, fs, self.preset.adain), (-1, C))
                    out = tf.tensor_scatter_nd_update(out, idx[:, None].astype(np.int64), t)
            return tf.reshape(out, tf.shape(fc))

    def _decode(self, t) -> np.ndarray:
        with tf.device(self.device):
            return np.asarray(self.net(t).numpy(), np.float64)
