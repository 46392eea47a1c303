"""Plain-TensorFlow baselines, written the way the TF tutorials write them, for ratio reporting.

Gatys: the "Neural style transfer" tutorial (tensorflow.org/tutorials/generative/style_transfer):
``keras.applications.VGG19(include_top=False)`` cut into a multi-output extraction model,
``vgg19.preprocess_input(image * 255)``, Gram by ``tf.linalg.einsum``, a ``@tf.function``
train step with ``tf.GradientTape`` and ``keras.optimizers.Adam``, clip to [0, 1].
Fast: a plain Keras transformer shaped like pytorch/examples' TransformerNet (reflection pad
by ``tf.pad``, Conv2D, instance norm as ``GroupNormalization(groups=-1)``, nearest ×2
upsampling), called eagerly in float32; a training step with a Keras VGG16 loss network.
Random weights (``weights=None``): timings do not depend on the values.

The bench (``resty.bench.workloads``, framework-free) reaches this module by name through
``resty.backends.load_backend_module``; the functions at the end (``gatys_adam``,
``gatys_run``, ``fast_infer``, ``fast_train``) have twins of the same name and meaning in
``resty_torch.baselines``: NumPy images in, a callable that does one timed call out.
``device`` is a TensorFlow device string ("/CPU:0", "/GPU:0").
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

# The tutorial's layers (content block5_conv2; style block1..5_conv1).  The bench uses the
# Gatys depth (content block4_conv2) so that the work equals Resty's Gatys presets.
TUTORIAL_LAYERS = (("block5_conv2",), ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1",
                                       "block5_conv1"))
GATYS_DEPTH_LAYERS = (("block4_conv2",), TUTORIAL_LAYERS[1])


# ----------------------------------------------------------------------------- Gatys (tutorial)
def vgg_layers(layer_names):
    vgg = keras.applications.VGG19(include_top=False, weights=None)
    vgg.trainable = False
    outputs = [vgg.get_layer(name).output for name in layer_names]
    return keras.Model([vgg.input], outputs)


def gram_matrix(input_tensor):
    result = tf.linalg.einsum("bijc,bijd->bcd", input_tensor, input_tensor)
    input_shape = tf.shape(input_tensor)
    num_locations = tf.cast(input_shape[1] * input_shape[2], tf.float32)
    return result / num_locations


class StyleContentModel(keras.models.Model):
    def __init__(self, style_layers, content_layers):
        super().__init__()
        self.vgg = vgg_layers(style_layers + content_layers)
        self.style_layers = style_layers
        self.content_layers = content_layers
        self.num_style_layers = len(style_layers)
        self.vgg.trainable = False

    def call(self, inputs):
        inputs = inputs * 255.0
        preprocessed_input = keras.applications.vgg19.preprocess_input(inputs)
        outputs = self.vgg(preprocessed_input)
        style_outputs, content_outputs = (outputs[:self.num_style_layers], outputs[self.num_style_layers:])
        style_outputs = [gram_matrix(style_output) for style_output in style_outputs]
        content_dict = {n: v for n, v in zip(self.content_layers, content_outputs)}
        style_dict = {n: v for n, v in zip(self.style_layers, style_outputs)}
        return {"content": content_dict, "style": style_dict}


class TutorialGatys:
    """Extractor + targets + ``train_step`` as in the tutorial.  ``run(n)`` makes n steps."""

    def __init__(self, content, style, layers=GATYS_DEPTH_LAYERS, style_weight=1e-2, content_weight=1e4,
                 total_variation_weight=30.0):
        content_layers, style_layers = list(layers[0]), list(layers[1])
        self.extractor = StyleContentModel(style_layers, content_layers)
        content = tf.convert_to_tensor(content[None], tf.float32)
        style = tf.convert_to_tensor(style[None], tf.float32)
        self.style_targets = self.extractor(style)["style"]
        self.content_targets = self.extractor(content)["content"]
        self.content = content
        self.style_image = style
        self.image = tf.Variable(content)
        self.opt = keras.optimizers.Adam(learning_rate=0.02, beta_1=0.99, epsilon=1e-1)
        ns, nc = len(style_layers), len(content_layers)

        def style_content_loss(outputs):
            style_outputs, content_outputs = outputs["style"], outputs["content"]
            style_loss = tf.add_n([tf.reduce_mean((style_outputs[n] - self.style_targets[n]) ** 2)
                                   for n in style_outputs.keys()])
            style_loss *= style_weight / ns
            content_loss = tf.add_n([tf.reduce_mean((content_outputs[n] - self.content_targets[n]) ** 2)
                                     for n in content_outputs.keys()])
            content_loss *= content_weight / nc
            return style_loss + content_loss

        @tf.function()
        def train_step(image):
            with tf.GradientTape() as tape:
                outputs = self.extractor(image)
                loss = style_content_loss(outputs)
                loss += total_variation_weight * tf.image.total_variation(image)
            grad = tape.gradient(loss, image)
            self.opt.apply_gradients([(grad, image)])
            image.assign(tf.clip_by_value(image, 0.0, 1.0))
            return loss
        self.train_step = train_step

    def targets(self) -> None:
        """Recompute the style and content targets (the tutorial does this once per image pair;
        the bench does it per call, as one stylize call does)."""
        self.extractor(self.style_image)
        self.extractor(self.content)

    def run(self, n: int) -> float:
        self.image.assign(self.content)
        loss = None
        for _ in range(n):
            loss = self.train_step(self.image)
        return float(loss[0] if loss.shape.rank else loss)   # host read = device sync


# ----------------------------------------------------------------------------- fast (examples net)
class ReflectionPad(keras.layers.Layer):
    def __init__(self, pad, **kw):
        super().__init__(**kw)
        self.pad = pad

    def call(self, x):
        p = self.pad
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")


def _conv(x, c, k, s):
    x = ReflectionPad(k // 2)(x)
    return keras.layers.Conv2D(c, k, s, padding="valid")(x)


def _norm(x):
    return keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)(x)


def examples_transformer(input_shape=(None, None, 3)) -> keras.Model:
    """pytorch/examples TransformerNet as a Keras functional model (NHWC, input ×255 units)."""
    inp = keras.Input(input_shape)
    x = keras.layers.ReLU()(_norm(_conv(inp, 32, 9, 1)))
    x = keras.layers.ReLU()(_norm(_conv(x, 64, 3, 2)))
    x = keras.layers.ReLU()(_norm(_conv(x, 128, 3, 2)))
    for _ in range(5):
        r = x
        y = keras.layers.ReLU()(_norm(_conv(x, 128, 3, 1)))
        y = _norm(_conv(y, 128, 3, 1))
        x = keras.layers.Add()([r, y])
    x = keras.layers.UpSampling2D(2, interpolation="nearest")(x)
    x = keras.layers.ReLU()(_norm(_conv(x, 64, 3, 1)))
    x = keras.layers.UpSampling2D(2, interpolation="nearest")(x)
    x = keras.layers.ReLU()(_norm(_conv(x, 32, 3, 1)))
    out = _conv(x, 3, 9, 1)
    return keras.Model(inp, out)


def examples_train_step_factory(batch: int, size: int):
    """One training step the examples' way in Keras: VGG16 block1_conv2, block2_conv2,
    block3_conv3, block4_conv3 (content block2_conv2), MSE on Grams, Keras Adam, tf.function."""
    net = examples_transformer((size, size, 3))
    vgg = keras.applications.VGG16(include_top=False, weights=None)
    vgg.trainable = False
    names = ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3"]
    feats = keras.Model(vgg.input, [vgg.get_layer(n).output for n in names])
    opt = keras.optimizers.Adam(1e-3)

    def gram(y):
        b, h, w, c = y.shape
        f = tf.reshape(y, (-1, h * w, c))
        return tf.matmul(f, f, transpose_a=True) / float(c * h * w)

    def vgg_in(x255):
        return keras.applications.vgg16.preprocess_input(x255)

    style = tf.random.uniform((1, size, size, 3), seed=0) * 255.0
    gs = [gram(f) for f in feats(vgg_in(style))]
    x = tf.random.uniform((batch, size, size, 3), seed=1) * 255.0

    @tf.function()
    def step():
        with tf.GradientTape() as tape:
            y = net(x, training=True)
            fy, fx = feats(vgg_in(y)), feats(vgg_in(x))
            c = 1e5 * tf.reduce_mean((fy[1] - fx[1]) ** 2)
            s = tf.add_n([tf.reduce_mean((gram(f) - g) ** 2) for f, g in zip(fy, gs)])
            loss = c + 1e10 * s
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    def run():
        return float(step())   # host read = device sync
    return run


# ----------------------------------------------------------------------------- the bench's entry points

def _tutorial(content: np.ndarray, style: np.ndarray, device: str) -> TutorialGatys:
    with tf.device(device):
        return TutorialGatys(np.asarray(content, np.float32), np.asarray(style, np.float32))


def gatys_adam(content: np.ndarray, style: np.ndarray, device: str, steps: int) -> Callable[[], object]:
    """One call: the tutorial's targets computed, then ``steps`` of its Adam ``train_step``, as
    one ``GatysStylizer.stylize(..., optimizer="adam")`` call does (the extractor is built and
    traced once, as the tutorial does)."""
    tg = _tutorial(content, style, device)

    # (no return value: the bench reads a float returned by a call as its work factor)
    def run():
        with tf.device(device):
            tg.targets()
            tg.run(steps)
    return run


def gatys_run(content: np.ndarray, style: np.ndarray, device: str) -> Callable[[int], object]:
    """``run(iters)``: the tutorial's loop with ``iters`` Adam steps (TensorFlow has no core
    L-BFGS), targets computed per call."""
    tg = _tutorial(content, style, device)

    def run(iters: int):
        with tf.device(device):
            tg.targets()
            tg.run(iters)
    return run


GATYS_RUN_NOTE = "TF tutorial loop, N Adam steps (TF core has no L-BFGS), extractor prebuilt, targets per call"


def fast_infer(images: np.ndarray, device: str) -> Callable[[], object]:
    """One eager float32 call of the examples-shaped Keras net on ``images`` (B×H×W×3 in
    [0, 1]), the input already on the device in the examples' 0..255 units."""
    with tf.device(device):
        net = examples_transformer()
        x255 = tf.constant(np.asarray(images, np.float32)) * 255.0

    def run():
        with tf.device(device):
            net(x255, training=False).numpy()   # host read = device sync
    return run


def fast_train(device: str, batch: int, size: int) -> Callable[[], object]:
    """One examples-style Keras training step (random data)."""
    with tf.device(device):
        step = examples_train_step_factory(batch, size)

    def run():
        with tf.device(device):
            step()
    return run


# ----------------------------------------------------------------------------- AdaIN (keras-io example)
def keras_adain_nets(widths=(256, 128, 64)):
    """The keras-io "Neural Style Transfer with AdaIN" example's encoder and decoder: Keras
    VGG19 (``weights=None``: random) cut at ``block4_conv1`` (relu4_1), and a
    ``keras.Sequential`` decoder of ``Conv2D(padding="same")`` and ``UpSampling2D``.  The
    example's first decoder conv is 512 wide; here the decoder mirrors the paper's widths so
    that the work equals Resty's ``pytorch-adain`` decoder."""
    vgg19 = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    vgg19.trainable = False
    encoder = keras.Model(vgg19.input, vgg19.get_layer("block4_conv1").output, name="mini_vgg19")
    a, b, c = widths
    config = {"kernel_size": 3, "strides": 1, "padding": "same", "activation": "relu"}
    decoder = keras.Sequential([
        keras.layers.InputLayer(shape=(None, None, 512)),
        keras.layers.Conv2D(filters=a, **config), keras.layers.UpSampling2D(),
        keras.layers.Conv2D(filters=a, **config), keras.layers.Conv2D(filters=a, **config),
        keras.layers.Conv2D(filters=a, **config), keras.layers.Conv2D(filters=b, **config),
        keras.layers.UpSampling2D(),
        keras.layers.Conv2D(filters=b, **config), keras.layers.Conv2D(filters=c, **config),
        keras.layers.UpSampling2D(),
        keras.layers.Conv2D(filters=c, **config),
        keras.layers.Conv2D(filters=3, kernel_size=3, strides=1, padding="same", activation="sigmoid"),
    ], name="decoder")
    return encoder, decoder


def _get_mean_std(x, epsilon=1e-5):
    """The example's ``get_mean_std``: ``tf.nn.moments`` over H, W (biased variance + eps)."""
    mean, variance = tf.nn.moments(x, axes=[1, 2], keepdims=True)
    return mean, tf.sqrt(variance + epsilon)


def _ada_in(style, content):
    content_mean, content_std = _get_mean_std(content)
    style_mean, style_std = _get_mean_std(style)
    return style_std * (content - content_mean) / content_std + style_mean


def adain_infer(content: np.ndarray, style: np.ndarray, device: str, alpha: float = 1.0) -> Callable[[], object]:
    """One stylization the way the example runs its models (eager Keras calls: encode style and
    content, ``ada_in``, alpha blend, decode), host image in and host image out, as
    ``AdaINStylizer.stylize`` takes and returns them."""
    with tf.device(device):
        encoder, decoder = keras_adain_nets()

    def run():
        with tf.device(device):
            c = tf.constant(np.asarray(content, np.float32)[None])
            s = tf.constant(np.asarray(style, np.float32)[None])
            cf, sf = encoder(c, training=False), encoder(s, training=False)
            t = _ada_in(style=sf, content=cf)
            t = alpha * t + (1 - alpha) * cf
            decoder(t, training=False).numpy()
    return run
