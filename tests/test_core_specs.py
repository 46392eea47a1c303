"""The core's specs and presets: validation, JSON round trips, layer tables, no framework."""
import json
import subprocess
import sys

import pytest

from resty import presets
from resty.specs import (AdamSpec, GatysConfig, LBFGSSpec, LossSpec, Preprocessing, TrainConfig,
                         TransformerSpec, VGGSpec, transformer_layers, transformer_param_shapes,
                         vgg_layer_names, vgg_layers, vgg_truncate)


def test_import_resty_loads_no_framework():
    # A fresh interpreter: importing the core (and its submodules) must not pull in a framework.
    code = ("import sys, resty, resty.specs, resty.presets, resty.losses, resty.reference, "
            "resty.images, resty.weights, resty.errors\n"
            "try:\n    import resty.common, resty.cli\nexcept ImportError:\n    pass\n"
            "bad = {'torch', 'tensorflow', 'keras'} & set(sys.modules)\n"
            "assert not bad, bad\nprint('clean')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "clean" in out.stdout


def test_vgg19_table_names_and_torchvision_indices():
    names = vgg_layer_names("vgg19")
    assert names[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert names[-3:] == ("conv5_4", "relu5_4", "pool5")
    assert len(names) == 37            # torchvision vgg19.features has 37 modules
    convs = [l for l in vgg_layers("vgg19") if l.kind == "conv"]
    assert len(convs) == 16
    # torchvision vgg19: features.34 is the last conv (conv5_4)
    assert convs[-1].name == "conv5_4" and convs[-1].index == 34
    assert [l.index for l in vgg_layers("vgg19")] == list(range(37))


def test_vgg16_table():
    table = vgg_layers("vgg16")
    assert len(table) == 31
    l = {x.name: x for x in table}
    assert l["conv4_3"].index == 21 and l["conv5_3"].index == 28   # torchvision vgg16.features
    assert l["conv4_3"].in_channels == 512
    assert l["conv3_1"].in_channels == 128 and l["conv3_1"].out_channels == 256
    assert "conv3_4" not in l


def test_truncate_cuts_after_deepest_and_rejects_unknown():
    cut = vgg_truncate("vgg19", ["relu1_1", "relu3_1"])
    assert cut[-1].name == "relu3_1"
    with pytest.raises(ValueError, match="relu9_9"):
        vgg_truncate("vgg19", ["relu9_9"])


@pytest.mark.parametrize("make, field, allowed", [
    (lambda: VGGSpec(arch="vgg11"), "arch", "vgg16"),
    (lambda: VGGSpec(pooling="min"), "pooling", "avg"),
    (lambda: LossSpec(gram="frobenius"), "gram", "gatys2015"),
    (lambda: LossSpec(tv="l3"), "tv", "abs_sum"),
    (lambda: LossSpec(style_layer_weights=(1.0,)), "style_layer_weights", "one weight per entry"),
    (lambda: LossSpec(content_weight=-1), "content_weight", ">= 0"),
    (lambda: GatysConfig(optimizer="sgd"), "optimizer", "lbfgs"),
    (lambda: GatysConfig(init="zeros"), "init", "noise"),
    (lambda: GatysConfig(iterations=0), "iterations", "> 0"),
    (lambda: GatysConfig(scales=(0.5, 0.25, 1.0)), "scales", "increasing"),
    (lambda: AdamSpec(beta1=1.5), "beta1", "[0, 1)"),
    (lambda: LBFGSSpec(line_search="armijo"), "line_search", "strong_wolfe"),
    (lambda: TransformerSpec(upsampling="bilinear"), "upsampling", "transposed_conv"),
    (lambda: TransformerSpec(norm="layer"), "norm", "instance"),
    (lambda: TransformerSpec(norm_eps=0), "norm_eps", "> 0"),
    (lambda: TransformerSpec(kernel_in=4), "kernel_in", "odd"),
    (lambda: TrainConfig(batch_size=0), "batch_size", "> 0"),
    (lambda: TrainConfig(epochs=None, steps=None), "epochs", "steps"),
    (lambda: Preprocessing(channel_order="GBR"), "channel_order", "BGR"),
])
def test_bad_values_name_field_and_allowed(make, field, allowed):
    with pytest.raises(ValueError) as e:
        make()
    msg = str(e.value)
    assert field in msg and allowed in msg and "\n" not in msg


@pytest.mark.parametrize("spec", [
    VGGSpec("vgg16", "avg"), LossSpec(), GatysConfig(optimizer="adam", scales=(0.5, 1.0)),
    TransformerSpec(upsampling="transposed_conv", norm="batch"), TrainConfig(steps=10),
    AdamSpec(epsilon_hat=True), LBFGSSpec(line_search="strong_wolfe"), Preprocessing(),
])
def test_json_round_trip(spec):
    back = type(spec).from_json(spec.to_json())
    assert back == spec
    assert json.loads(back.to_json()) == json.loads(spec.to_json())


def test_unknown_field_rejected():
    with pytest.raises(ValueError, match="unknown field"):
        LossSpec.from_dict({"content_layers": ["relu4_2"], "bogus": 1})


def test_transformer_layers_and_shapes():
    spec = TransformerSpec()
    names = [l.name for l in transformer_layers(spec)]
    assert names[:3] == ["conv_in", "down1", "down2"] and names[-1] == "conv_out"
    assert sum(n.startswith("res") for n in names) == 10
    shapes = transformer_param_shapes(spec)
    assert shapes["conv_in.weight"] == (32, 3, 9, 9)
    assert "conv_in.bias" not in shapes           # bias before instance norm has zero gradient
    assert shapes["conv_out.bias"] == (3,)
    tr = transformer_param_shapes(TransformerSpec(upsampling="transposed_conv"))
    assert tr["up1.weight"] == (128, 64, 3, 3)     # IOHW for transposed convs
    assert "conv_in.bias" in transformer_param_shapes(TransformerSpec(conv_bias_before_norm=True))


def test_presets_all_present_and_round_trip():
    want = {"restynet", "gatys2015", "johnson2016", "pytorch-examples", "pytorch-tutorial", "tf-tutorial"}
    assert want <= set(presets.names())
    for name in presets.names():
        p = presets.get(name)
        assert p.sources and p.description
        assert presets.Preset.from_json(p.to_json()) == p
        assert name in p.describe()


def test_adain_presets_in_the_one_registry():
    from resty.adain import ADAIN_PRESETS, AdaINPreset
    assert set(ADAIN_PRESETS) <= set(presets.names())
    assert presets.names("adain") == tuple(ADAIN_PRESETS)
    assert presets.names("gatys") == presets.names("fast") == tuple(presets.PRESETS)
    for name in ADAIN_PRESETS:
        p = presets.get(name)
        assert isinstance(p, AdaINPreset) and presets.method_of(name) == "adain"
        text = p.describe()
        assert "σ" in text and "Adam" in text and "sources:" in text
    assert "unbiased_eps = sqrt(Σ(x−μ)²/(N−1) + 1e-05)" in presets.get("pytorch-adain").describe()
    assert "style biased = sqrt(Σ(x−μ)²/N)" in presets.get("adain2017").describe()
    with pytest.raises(ValueError, match="AdaIN preset"):     # resolve() stays the Gatys/Johnson API
        presets.resolve("adain2017")
    with pytest.raises(ValueError, match="AdaIN preset"):
        presets.resolve(presets.get("keras-adain").to_dict())


def test_unknown_preset_lists_known():
    with pytest.raises(ValueError) as e:
        presets.get("picasso")
    assert "picasso" in str(e.value) and "gatys2015" in str(e.value) and "tf-tutorial" in str(e.value)


def test_preset_facts_from_sources():
    g = presets.get("gatys2015")
    assert g.vgg == VGGSpec("vgg19", "avg")
    assert g.loss.content_layers == ("relu4_2",)
    assert g.loss.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert len(set(g.loss.style_layer_weights)) == 1
    assert g.loss.content_weight / g.loss.style_weight == pytest.approx(1e-3)
    assert g.gatys.optimizer == "lbfgs" and g.loss.gram == "gatys2015"
    j = presets.get("johnson2016")
    assert j.vgg.arch == "vgg16" and j.fast_loss.content_layers == ("relu2_2",)
    assert j.fast_loss.style_layers == ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    assert (j.training.image_size, j.training.batch_size, j.training.adam.lr) == (256, 4, 1e-3)
    assert 1e-6 <= j.fast_loss.tv_weight <= 1e-4
    e = presets.get("pytorch-examples")
    assert (e.fast_loss.content_weight, e.fast_loss.style_weight) == (1e5, 1e10)
    assert e.transformer.conv_bias_before_norm and e.imagenet_source == "torchvision"
    r = presets.get("restynet")
    assert r.vgg.arch == "vgg19" and r.gatys.optimizer == "adam" and r.gatys.adam.lr == 1e-3
    assert r.training.adam.lr == 1e-3 and r.transformer.norm == "instance"
    t = presets.get("tf-tutorial")
    assert t.imagenet_source == "keras" and t.loss.tv == "abs_sum" and t.gatys.adam.epsilon_hat
    pt = presets.get("pytorch-tutorial")
    assert pt.loss.content_layers == ("conv2_2",) and pt.loss.style_weight == 1e6


def test_preset_resolve_accepts_dict_and_rejects_bad_layers():
    p = presets.get("gatys2015")
    assert presets.resolve(p.to_dict()) == p
    assert presets.resolve(p.to_json()) == p
    d = p.to_dict()
    d["loss"]["style_layers"] = ["relu1_1", "relu3_4", "relu4_1", "relu5_1", "relu2_1"]
    d["vgg"]["arch"] = "vgg16"
    with pytest.raises(ValueError, match="relu3_4"):
        presets.resolve(d)
