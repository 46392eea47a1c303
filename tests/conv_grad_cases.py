"""Convolution shapes shared by tests/test_torch_conv_grads.py and tests/test_tf_conv_grads.py:
every case the transformer's stride-1 convs have, for the forward-convolution gradients."""

# (batch, height, width, in channels, out channels, kernel h, kernel w, bias)
CONV_GRAD_CASES = [
    (2, 13, 11, 8, 3, 5, 5, True),     # fewer outputs than inputs (the output conv's case)
    (1, 12, 12, 3, 8, 5, 5, True),     # more outputs (the input conv's case)
    (2, 9, 10, 6, 6, 3, 3, False),     # equal, no bias
    (1, 8, 9, 5, 2, 3, 2, True),       # non-square kernel
    (3, 6, 6, 4, 7, 1, 1, True),       # 1x1
]
