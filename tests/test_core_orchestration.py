"""Tests of resty.common: the framework-free decisions both backends share."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from resty import checkpoints, gatys, inference, inputs, runtime, training_data
from resty.errors import ImageError, RestyError, TrainingError


def _rand(h, w, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def test_blend_weights():
    assert inputs.blend_weights(None, 4) == (0.25,) * 4
    assert inputs.blend_weights([1, 3], 2) == (0.25, 0.75)
    with pytest.raises(RestyError):
        inputs.blend_weights([1], 2)
    with pytest.raises(RestyError):
        inputs.blend_weights([-1, 2], 2)
    with pytest.raises(RestyError):
        inputs.blend_weights([0, 0], 2)


def test_output_size_and_prepare_content():
    assert gatys.output_size((37, 53), None) == (37, 53)
    assert gatys.output_size((37, 53), 106) == (74, 106)
    img = _rand(37, 53)
    orig, resized = gatys.prepare_content((img * 255).astype(np.uint8), 26)
    assert orig.shape == (37, 53, 3) and orig.dtype == np.float32
    assert resized.shape == (18, 26, 3)
    _, same = gatys.prepare_content(img, None)
    assert same.shape == img.shape


def test_prepare_styles_single_and_list():
    styles, w = inputs.prepare_styles(_rand(20, 30))
    assert len(styles) == 1 and w == (1.0,)
    styles, w = inputs.prepare_styles([_rand(20, 30), Image.new("RGB", (10, 12))], [2, 2])
    assert len(styles) == 2 and w == (0.5, 0.5) and styles[1].shape == (12, 10, 3)
    assert gatys.resize_style(styles[0], (37, 53), 0.5).shape[1] == 26   # longest side 0.5 * 53


def test_init_image_modes_are_seeded():
    content = _rand(9, 11)
    assert np.array_equal(gatys.init_image("content", content, None, 0, 0.25), content)
    a = gatys.init_image("noise", content, None, 3, 0.25)
    b = gatys.init_image("noise", content, None, 3, 0.25)
    expected = np.clip(0.5 + 0.25 * np.random.default_rng(3).standard_normal((9, 11, 3)), 0, 1)
    assert np.array_equal(a, b) and np.allclose(a, expected, atol=1e-7)
    assert a.min() >= 0 and a.max() <= 1
    s = gatys.init_image("style", content, _rand(30, 40), 0, 0.25)
    assert s.shape == content.shape
    with pytest.raises(RestyError):
        gatys.init_image("bogus", content, None, 0, 0.25)


def test_scale_plan_and_iterations():
    assert gatys.split_iterations(10, 3) == [3, 3, 4]
    assert sum(gatys.split_iterations(7, 4)) == 7
    plan = gatys.scale_plan((37, 53), (0.5, 1.0), 11)
    assert plan[-1] == ((37, 53), 6) and plan[0][1] == 5
    assert max(plan[0][0]) == 26


def test_nonfinite_message():
    with pytest.raises(TrainingError, match="at step 7"):
        runtime.check_finite(float("nan"), 7)
    runtime.check_finite(1.0, 1)
    assert "precision=None" in runtime.nonfinite_message(float("inf"), 3)


def test_progress_disabled_and_enabled():
    with runtime.Progress(3, enabled=False) as p:
        p.update(1, {"total": 1.0})
    with runtime.Progress(3, enabled=True) as p:
        p.update(1, {"total": 1.0, "style": 2.0})


def test_list_training_images(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.jpg", "sub/c.PNG"):
        Image.fromarray((_rand(8, 8) * 255).astype(np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    items = training_data.list_training_images(tmp_path)
    assert [p.split("/")[-1] for p in items] == ["a.jpg", "b.png", "c.PNG"]
    arrays = training_data.list_training_images(iter([_rand(4, 4), _rand(4, 4)]))
    assert len(arrays) == 2
    assert training_data.item_name(arrays[1], 1) == "<ndarray #1>"
    with pytest.raises(ImageError):
        training_data.list_training_images(tmp_path / "missing")


def test_batch_schedule_pure():
    s = training_data.BatchSchedule(10, 3, seed=5)
    assert s.steps_per_epoch == 3
    assert s.total_steps(None, 2) == 6 and s.total_steps(4, None) == 4
    first = [s.batch(i) for i in range(6)]
    again = [training_data.BatchSchedule(10, 3, seed=5).batch(i) for i in range(6)]
    assert first == again
    # Each epoch visits distinct items, in an order fixed by (seed, epoch).
    epoch0 = sum(first[:3], [])
    assert len(set(epoch0)) == 9
    assert list(np.random.default_rng([5, 1]).permutation(10)[:3]) == first[3]
    assert training_data.BatchSchedule(2, 4, 0).batch(0) and training_data.BatchSchedule(2, 4, 0).batch_size == 2


def test_load_training_item(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray((_rand(40, 50) * 255).astype(np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    a = training_data.load_training_item(str(good), 16, seed=1, step=3, slot=0)
    b = training_data.load_training_item(str(good), 16, seed=1, step=3, slot=0)
    d = training_data.load_training_item(str(good), 16, seed=1, step=4, slot=0)
    assert a.shape == (16, 16, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, d)     # a different step draws a different crop
    assert training_data.load_training_item(str(bad), 16, 1, 0, 0) is None
    assert training_data.load_training_item(str(tmp_path / "gone.png"), 16, 1, 0, 0) is None


def test_checkpoints_roundtrip_and_keep(tmp_path):
    t = {"net.w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    t.update(checkpoints.adam_state_to_tensors(4, {"w": np.ones((2, 3))}, {"w": np.full((2, 3), 2.0)}))
    for step in (2, 4, 6):
        checkpoints.save_checkpoint(tmp_path, step, t, {"step": step, "rng": {"a": [1, 2]}, "x": np.int64(3)}, keep=2)
    steps = [s for s, _ in checkpoints.list_checkpoints(tmp_path)]
    assert steps == [4, 6]
    assert checkpoints.latest_checkpoint(tmp_path).name == "step-00000006.json"
    tensors, meta = checkpoints.load_checkpoint(tmp_path)
    assert meta["step"] == 6 and meta["x"] == 3 and meta["format"] == checkpoints.CHECKPOINT_FORMAT
    assert np.array_equal(tensors["net.w"], t["net.w"])
    step, m, v = checkpoints.adam_state_from_tensors(tensors)
    assert step == 4 and np.array_equal(m["w"], np.ones((2, 3))) and np.array_equal(v["w"], np.full((2, 3), 2.0))
    # A JSON without its safetensors is incomplete and ignored.
    (tmp_path / "step-00000008.json").write_text(json.dumps({"step": 8}))
    assert checkpoints.latest_checkpoint(tmp_path).name == "step-00000006.json"
    assert checkpoints.latest_checkpoint(tmp_path / "nothing") is None
    with pytest.raises(RestyError):
        checkpoints.load_checkpoint(tmp_path / "nothing")


def test_tiling_identity_and_coverage():
    img = _rand(70, 90)
    for tile, overlap in ((32, 8), (64, 0), (100, 10), (20, 19)):
        out = inference.tiled_apply(img, lambda t: t * 0.5, tile, overlap)
        assert out.shape == img.shape and np.allclose(out, img * 0.5, atol=1e-6)
    plan = inference.tile_plan(70, 90, 32, 8)
    cover = np.zeros((70, 90), int)
    for y0, y1, x0, x1 in plan:
        assert y1 - y0 == 32 and x1 - x0 == 32
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    win = inference.tile_window(plan[0], 70, 90, 8)
    assert win[0, 0] == 1.0 and win[-1, -1] < 0.2
    with pytest.raises(RestyError):
        inference.tile_plan(10, 10, 8, 8)


def test_cpu_half_precision_warning_only_without_native_support():
    from resty.runtime import cpu_half_precision_warning
    avx2 = frozenset({"avx", "avx2", "fma"})
    assert "bf16" in cpu_half_precision_warning("bf16", avx2)
    assert "precision=None" in cpu_half_precision_warning("fp16", avx2)
    assert cpu_half_precision_warning("bf16", avx2 | {"avx512_bf16"}) is None
    assert cpu_half_precision_warning("fp16", avx2 | {"amx_fp16"}) is None
    assert cpu_half_precision_warning(None, avx2) is None
    assert cpu_half_precision_warning("bf16", frozenset({"neon"})) is None     # not an x86 we can judge
