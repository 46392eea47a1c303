"""The TensorFlow tutorial "Neural style transfer"
(tensorflow.org/tutorials/generative/style_transfer), as the tutorial writes it, for
tests/test_preset_sources.py.  Test-only: never imported by resty.

Changes from the tutorial's text, each forced by running it here: VGG19 gets seeded random
weights (``weights=None``, then the canonical Caffe-layout kernels), the model is built and run
in float64 (``keras.config.set_floatx`` before building; ``gram_matrix`` divides in the
input's dtype instead of float32), and ``load_img`` takes an array: its size is the tutorial's
own arithmetic (``new_shape = tf.cast(shape * scale, tf.int32)``), its pixels come from
resty.images.resize_to (Resty decodes and resizes once, in the core)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from resty.images import resize_to
from source_common import vgg_conv_tensors


def load_img(array: np.ndarray, max_dim: int = 512) -> tf.Tensor:
    img = tf.constant(array)
    shape = tf.cast(tf.shape(img)[:-1], tf.float32)
    long_dim = max(shape)
    scale = max_dim / long_dim
    new_shape = tf.cast(shape * scale, tf.int32)
    img = tf.constant(resize_to(array, tuple(int(v) for v in new_shape.numpy())))
    img = img[tf.newaxis, :]
    return img


def vgg_layers(layer_names, weights):
    """ Creates a VGG model that returns a list of intermediate output values."""
    vgg = tf.keras.applications.VGG19(include_top=False, weights=None)
    convs = [layer for layer in vgg.layers if isinstance(layer, keras.layers.Conv2D)]
    for layer, (kernel, bias) in zip(convs, vgg_conv_tensors(weights)):
        layer.set_weights([kernel.transpose(2, 3, 1, 0), bias])
    vgg.trainable = False
    outputs = [vgg.get_layer(name).output for name in layer_names]
    model = tf.keras.Model([vgg.input], outputs)
    return model


def gram_matrix(input_tensor):
    result = tf.linalg.einsum('bijc,bijd->bcd', input_tensor, input_tensor)
    input_shape = tf.shape(input_tensor)
    num_locations = tf.cast(input_shape[1] * input_shape[2], input_tensor.dtype)
    return result / (num_locations)


class StyleContentModel(tf.keras.models.Model):
    def __init__(self, style_layers, content_layers, weights):
        super(StyleContentModel, self).__init__()
        self.vgg = vgg_layers(style_layers + content_layers, weights)
        self.style_layers = style_layers
        self.content_layers = content_layers
        self.num_style_layers = len(style_layers)
        self.vgg.trainable = False

    def call(self, inputs):
        "Expects float input in [0,1]"
        inputs = inputs * 255.0
        preprocessed_input = tf.keras.applications.vgg19.preprocess_input(inputs)
        outputs = self.vgg(preprocessed_input)
        style_outputs, content_outputs = (outputs[:self.num_style_layers], outputs[self.num_style_layers:])
        style_outputs = [gram_matrix(style_output) for style_output in style_outputs]
        content_dict = {content_name: value for content_name, value in zip(self.content_layers, content_outputs)}
        style_dict = {style_name: value for style_name, value in zip(self.style_layers, style_outputs)}
        return {'content': content_dict, 'style': style_dict}


content_layers = ['block5_conv2']
style_layers = ['block1_conv1', 'block2_conv1', 'block3_conv1', 'block4_conv1', 'block5_conv1']
num_content_layers = len(content_layers)
num_style_layers = len(style_layers)


def clip_0_1(image):
    return tf.clip_by_value(image, clip_value_min=0.0, clip_value_max=1.0)


def tutorial(content: np.ndarray, style: np.ndarray, weights, max_dim: int, steps: int) -> np.ndarray:
    """The tutorial from ``load_img`` to the "Total variation loss" section's loop (its
    ``train_step`` with ``total_variation_weight=30``), ``steps`` steps, in float64."""
    saved, saved_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    # a global dtype policy left by other code would override floatx for new layers
    keras.config.set_dtype_policy("float64")
    try:
        content_image = tf.cast(load_img(content, max_dim), tf.float64)
        style_image = tf.cast(load_img(style, max_dim), tf.float64)
        extractor = StyleContentModel(style_layers, content_layers, weights)
        style_targets = extractor(style_image)['style']
        content_targets = extractor(content_image)['content']
        image = tf.Variable(content_image)
        opt = tf.keras.optimizers.Adam(learning_rate=0.02, beta_1=0.99, epsilon=1e-1)
        style_weight = 1e-2
        content_weight = 1e4
        total_variation_weight = 30

        def style_content_loss(outputs):
            style_outputs = outputs['style']
            content_outputs = outputs['content']
            style_loss = tf.add_n([tf.reduce_mean((style_outputs[name] - style_targets[name]) ** 2)
                                   for name in style_outputs.keys()])
            style_loss *= style_weight / num_style_layers
            content_loss = tf.add_n([tf.reduce_mean((content_outputs[name] - content_targets[name]) ** 2)
                                     for name in content_outputs.keys()])
            content_loss *= content_weight / num_content_layers
            loss = style_loss + content_loss
            return loss

        @tf.function()
        def train_step(image):
            with tf.GradientTape() as tape:
                outputs = extractor(image)
                loss = style_content_loss(outputs)
                loss += total_variation_weight * tf.image.total_variation(image)
            grad = tape.gradient(loss, image)
            opt.apply_gradients([(grad, image)])
            image.assign(clip_0_1(image))

        for _ in range(steps):
            train_step(image)
        return image.numpy()[0]
    finally:
        keras.config.set_floatx(saved)
        keras.config.set_dtype_policy(saved_policy)
