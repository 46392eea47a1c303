"""Runs that cannot be mixed up (resty.run_identity, resty.checkpoints, FastStylizerBase.fit).

Every checkpoint carries its run's identity (preset, style pixels and blend weights, loss-network
weights, training data, settings).  A resume refuses another run's checkpoint in one line naming
what differs; a new run refuses a folder that already holds checkpoints; pruning deletes only the
run's own; an unreadable newest checkpoint is skipped with a warning; a failed checkpoint write
is one line naming the file; training on no readable image is an error, not a model.  Each test
runs once per backend and expects the same messages.  Tiny: a VGG cut at relu2_2, 4x8x8
channels, 24-32 px images, 2-3 steps.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import warnings

import numpy as np
import pytest

from resty import backends, checkpoints, presets
from resty import images as I
from resty.errors import BackendUnavailableError, ImageError, RestyError

BACKENDS = ("torch", "tf")


@pytest.fixture(scope="module", params=BACKENDS)
def B(request):
    try:
        return backends.get_backend(request.param)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


def _preset(**fast_loss):
    p = presets.get("johnson2016")
    return p.replace(name="identity-tiny",
                     transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1),
                     fast_loss=p.fast_loss.replace(style_layers=("relu1_2", "relu2_2"), style_layer_weights=(1.0, 1.0),
                                                   **fast_loss),
                     training=p.training.replace(image_size=24, batch_size=2, num_workers=0, log_every=1,
                                                 checkpoint_every=1, keep_checkpoints=3))


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


ARRAYS = [_rand(28, 30, 3, seed=k) for k in range(4)]
STYLE = _rand(24, 24, 3, seed=7)
KW = dict(steps=2, seed=0)


def _one_line(exc_type, fn, *a, **kw) -> str:
    with pytest.raises(exc_type) as info:
        fn(*a, **kw)
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    return msg


def _stylizer(B, preset=None, weights="random:0"):
    return B.FastStylizer(preset or _preset(), weights=weights, device="cpu")


@pytest.fixture(scope="module")
def run_a(B, tmp_path_factory):
    """A finished 2-step run with checkpoints at steps 1 and 2 (never modified by the tests)."""
    ck = tmp_path_factory.mktemp(f"run_a_{B.__name__}")
    s = _stylizer(B).fit(ARRAYS, STYLE, checkpoint_dir=ck, **KW)
    assert [st for st, _ in checkpoints.list_checkpoints(ck)] == [1, 2] and s["checkpoint"].endswith("2.json")
    return ck


def _copy(src, tmp_path):
    dst = tmp_path / "ck"
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- resume refuses another run
OTHER = {
    "style image": lambda B: (_stylizer(B), dict(images=ARRAYS, style=STYLE[::-1].copy())),
    "preset": lambda B: (_stylizer(B, _preset(style_weight=50.0)), dict(images=ARRAYS, style=STYLE)),
    "loss-network weights": lambda B: (_stylizer(B, weights="random:1"), dict(images=ARRAYS, style=STYLE)),
    "training data": lambda B: (_stylizer(B), dict(images=ARRAYS[:3] + [ARRAYS[0]], style=STYLE)),
    "style blend weights": lambda B: (_stylizer(B), dict(images=ARRAYS, style=[STYLE, STYLE], style_weights=[1, 3])),
    "settings": lambda B: (_stylizer(B), dict(images=ARRAYS, style=STYLE, lr=5e-3)),
}
EXPECT = {"style image": "a different style image (checkpoint 1 image(s) ",
          "preset": "a different preset (fast_loss.style_weight: checkpoint 5.0, this run 50.0)",
          "loss-network weights": "different loss-network weights (checkpoint 'random:0' ",
          "training data": "different training data (checkpoint 4 items ",
          "style blend weights": "different style images (checkpoint 1 image(s) ",
          "settings": "different settings (lr: checkpoint 0.001, this run 0.005)"}


@pytest.mark.parametrize("what", list(OTHER))
def test_resume_refuses_another_runs_checkpoint(B, run_a, tmp_path, what):
    ck = _copy(run_a, tmp_path)
    f, args = OTHER[what](B)
    before = f.net.state_dict_canonical()
    msg = _one_line(RestyError, f.fit, args.pop("images"), args.pop("style"), checkpoint_dir=ck, resume=True,
                    steps=3, seed=0, **args)
    assert msg.startswith(f"{ck / 'step-00000002.json'}: cannot resume: the checkpoint was made with "), msg
    assert EXPECT[what] in msg, msg
    assert [st for st, _ in checkpoints.list_checkpoints(ck)] == [1, 2]     # nothing written
    after = f.net.state_dict_canonical()
    assert all(np.array_equal(before[k], after[k]) for k in before)          # nothing trained


def test_resume_refuses_blend_weights_of_the_same_styles(B, tmp_path):
    f = _stylizer(B)
    f.fit(ARRAYS, [STYLE, STYLE[::-1].copy()], style_weights=[1, 1], checkpoint_dir=tmp_path, **KW)
    msg = _one_line(RestyError, _stylizer(B).fit, ARRAYS, [STYLE, STYLE[::-1].copy()], style_weights=[1, 3],
                    checkpoint_dir=tmp_path, resume=True, steps=3, seed=0)
    assert "different style blend weights (checkpoint [0.5, 0.5], this run [0.25, 0.75])" in msg, msg


def test_same_run_resumes_further_and_the_identity_is_in_the_checkpoint(B, run_a, tmp_path):
    ck = _copy(run_a, tmp_path)
    s = _stylizer(B).fit(list(ARRAYS), STYLE.copy(), checkpoint_dir=ck, resume=True, steps=3, seed=0)
    assert s["start_step"] == 2 and s["steps"] == 3
    _, meta = checkpoints.load_checkpoint(ck / "step-00000003.json")
    ident = meta["identity"]
    assert set(ident) >= {"preset", "style", "loss_network", "data", "settings"}
    assert ident["data"]["n_items"] == 4 and ident["loss_network"]["weights"] == "random:0"
    assert ident["settings"] == {"batch_size": 2, "image_size": 24, "seed": 0, "lr": 0.001, "style_size": None}
    assert meta["run_id"] == checkpoints.checkpoint_run_id(ck / "step-00000003.json")


# ---------------------------------------------------------------- a new run in an occupied folder
def test_new_run_refuses_a_folder_with_checkpoints(B, run_a, tmp_path):
    ck = _copy(run_a, tmp_path)
    msg = _one_line(RestyError, _stylizer(B).fit, ARRAYS, STYLE[::-1].copy(), checkpoint_dir=ck, **KW)
    assert msg == (f"{ck}: holds checkpoints of another training run (newest step-00000002.json); give this run "
                   "another checkpoint_dir, or continue that run with its own inputs and resume=True")
    msg = _one_line(RestyError, _stylizer(B).fit, ARRAYS, STYLE, checkpoint_dir=ck, **KW)
    assert msg == (f"{ck}: already holds this run's checkpoints (up to step-00000002.json); continue them with "
                   "resume=True, or start over in another checkpoint_dir"), msg
    assert [st for st, _ in checkpoints.list_checkpoints(ck)] == [1, 2]


def test_pruning_keeps_another_runs_checkpoints(tmp_path):
    t = {"net.w": np.ones(3, np.float32)}
    for step in (10, 11):
        checkpoints.save_checkpoint(tmp_path, step, t, {"step": step}, keep=2, run_id="aaaa")
    for step in (1, 2, 3):
        checkpoints.save_checkpoint(tmp_path, step, t, {"step": step}, keep=2, run_id="bbbb")
    assert [s for s, _ in checkpoints.list_checkpoints(tmp_path)] == [2, 3, 10, 11]
    assert [checkpoints.checkpoint_run_id(p) for _, p in checkpoints.list_checkpoints(tmp_path)] == \
        ["bbbb", "bbbb", "aaaa", "aaaa"]


# ---------------------------------------------------------------- unreadable checkpoints
def _truncate(p):
    p.write_bytes(p.read_bytes()[:100])


CORRUPT = {
    "truncated tensors": lambda ck: _truncate(ck / "step-00000002.safetensors"),
    "empty tensors": lambda ck: (ck / "step-00000002.safetensors").write_bytes(b""),
    "garbage json": lambda ck: (ck / "step-00000002.json").write_bytes(b"\x00\xffnot json"),
    "json list": lambda ck: (ck / "step-00000002.json").write_text("[]"),
    "json null": lambda ck: (ck / "step-00000002.json").write_text("null"),
    "missing tensor": lambda ck: _drop_tensor(ck / "step-00000002.safetensors"),
}


def _drop_tensor(p):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(p), framework="numpy") as f:
        header = f.metadata()
    t = load_file(str(p))
    t.pop(sorted(k for k in t if k.startswith("net."))[0])
    save_file(t, str(p), metadata=header)


@pytest.mark.parametrize("how", list(CORRUPT))
def test_unreadable_newest_checkpoint_warns_and_resumes_from_the_previous(B, run_a, tmp_path, how):
    ck = _copy(run_a, tmp_path)
    CORRUPT[how](ck)
    with pytest.warns(RuntimeWarning) as rec:
        s = _stylizer(B).fit(ARRAYS, STYLE, checkpoint_dir=ck, resume=True, steps=2, seed=0)
    msgs = [str(w.message) for w in rec if "cannot read checkpoint" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith(str(ck / "step-00000002.json")), msgs
    assert msgs[0].endswith("; trying the checkpoint before it") and "\n" not in msgs[0]
    assert s["start_step"] == 1 and s["steps"] == 2
    checkpoints.load_checkpoint(ck / "step-00000002.json")        # rewritten, readable again


def test_no_readable_checkpoint_refuses(B, run_a, tmp_path):
    ck = _copy(run_a, tmp_path)
    for step in (1, 2):
        (ck / f"step-0000000{step}.json").write_text("null")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        msg = _one_line(RestyError, _stylizer(B).fit, ARRAYS, STYLE, checkpoint_dir=ck, resume=True, **KW)
    assert msg == (f"{ck}: cannot resume: none of its 2 checkpoint(s) can be read (newest step-00000002.json); "
                   "start a new run in another checkpoint_dir")


def test_checkpoint_without_identity_resumes_with_a_warning(B, run_a, tmp_path):
    """Checkpoints written before run identities: their preset and settings are still checked."""
    ck = _copy(run_a, tmp_path)
    for _, p in checkpoints.list_checkpoints(ck):
        meta = json.loads(p.read_text())
        meta.pop("identity"), meta.pop("run_id")
        p.write_text(json.dumps(meta))
    with pytest.warns(RuntimeWarning, match="without a run identity"):
        s = _stylizer(B).fit(ARRAYS, STYLE, checkpoint_dir=ck, resume=True, steps=3, seed=0)
    assert s["start_step"] == 2
    ck2 = _copy(run_a, tmp_path / "again")
    p = ck2 / "step-00000002.json"
    meta = json.loads(p.read_text())
    meta.pop("identity")
    p.write_text(json.dumps(meta))
    msg = _one_line(RestyError, _stylizer(B).fit, ARRAYS, STYLE, checkpoint_dir=ck2, resume=True, steps=3, seed=0,
                    batch_size=3)
    assert "different settings (batch_size: checkpoint 2, this run 3)" in msg, msg


# ---------------------------------------------------------------- failed writes
@pytest.mark.parametrize("which", ["safetensors", "json"])
def test_failed_checkpoint_write_is_one_line_and_keeps_the_previous(B, tmp_path, monkeypatch, which):
    import safetensors.numpy
    from pathlib import Path
    calls = {"n": 0}
    if which == "safetensors":
        real = safetensors.numpy.save_file

        def fake(tensors, filename, metadata=None):
            calls["n"] += 1
            if calls["n"] == 2:
                with open(filename, "wb") as fh:
                    fh.write(b"\0" * 10)                 # a partial write, then the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(tensors, filename, metadata=metadata)
        monkeypatch.setattr(safetensors.numpy, "save_file", fake)
    else:
        real = Path.write_text

        def fake(self, text, *a, **kw):
            if self.name.startswith("step-") or ".step-" in self.name or "step-" in self.name:
                calls["n"] += 1
                if calls["n"] == 2:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, text, *a, **kw)
        monkeypatch.setattr(Path, "write_text", fake)
    ck = tmp_path / "ck"
    msg = _one_line(RestyError, _stylizer(B).fit, ARRAYS, STYLE, checkpoint_dir=ck, steps=3, seed=0)
    suffix = ".safetensors" if which == "safetensors" else ".json"
    assert msg == (f"{ck / ('step-00000002' + suffix)}: cannot write checkpoint (No space left on device); the "
                   "checkpoints written before are left as they were"), msg
    monkeypatch.undo()
    assert sorted(p.name for p in ck.iterdir()) == ["step-00000001.json", "step-00000001.safetensors"]
    checkpoints.load_checkpoint(ck / "step-00000001.json")
    s = _stylizer(B).fit(ARRAYS, STYLE, checkpoint_dir=ck, resume=True, steps=3, seed=0)
    assert s["start_step"] == 1 and s["steps"] == 3


# ---------------------------------------------------------------- no readable training image
def _broken_folder(path, n=3):
    path.mkdir(parents=True)
    for i in range(n):
        (path / f"b{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path


@pytest.mark.parametrize("steps", [1, 5])
def test_no_readable_training_image_is_an_error(B, tmp_path, steps):
    data = _broken_folder(tmp_path / "data")
    f = _stylizer(B)
    before = f.net.state_dict_canonical()
    msg = _one_line(ImageError, f.fit, str(data), STYLE, checkpoint_dir=tmp_path / "ck", steps=steps, seed=0,
                    batch_size=1)
    n_steps = 1 if steps == 1 else 3          # 3 items of batch 1: an epoch is 3 steps
    n_bad = 1 if steps == 1 else 3
    assert msg == (f"{data}: no readable training image in {n_steps} step(s) ({n_bad} of 3 image(s) skipped as "
                   "unreadable: corrupt, truncated or not images); no model was trained"), msg
    assert checkpoints.list_checkpoints(tmp_path / "ck") == []
    after = f.net.state_dict_canonical()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_some_unreadable_images_still_train(B, tmp_path):
    data = _broken_folder(tmp_path / "data", n=2)
    I.save_image(_rand(28, 30, 3), data / "good.png")
    s = _stylizer(B).fit(str(data), STYLE, steps=3, seed=0, batch_size=1)
    assert s["steps"] == 3 and s["skipped_count"] >= 1 and any("total" in h for h in s["history"])


# ---------------------------------------------------------------- the command line
@pytest.fixture
def cli_dir(tmp_path, monkeypatch):
    from cli_helpers import offline_env
    offline_env(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    for i in range(3):
        I.save_image(_rand(28, 30, 3, seed=i), data / f"img{i}.png")
    I.save_image(STYLE, tmp_path / "style.png")
    I.save_image(STYLE[::-1], tmp_path / "other.png")
    return tmp_path


def _train(style, data, out, *extra):
    return ["train", style, "--data", data, "--out", out, "--weights", "random:0", "--steps", "2", "--batch-size",
            "2", "--image-size", "24", "-q", *extra]


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_resume_into_another_runs_folder(backend, cli_dir, capsys):
    from cli_helpers import assert_usage_error, run
    pytest.importorskip("torch" if backend == "torch" else "tensorflow")
    d = cli_dir
    rc, _, err = run(_train(d / "style.png", d / "data", d / "a.safetensors", "--backend", backend,
                            "--checkpoint-dir", d / "ck"), capsys)
    assert rc == 0, err
    rc, _, err = run(_train(d / "other.png", d / "data", d / "b.safetensors", "--backend", backend,
                            "--checkpoint-dir", d / "ck", "--resume", "--steps", "3"), capsys)
    line = assert_usage_error(rc, err, f"{d / 'ck' / 'step-00000002.json'}: cannot resume: the checkpoint was made "
                              "with a different style image", "another --checkpoint-dir")
    assert "resume=True" not in line and "checkpoint_dir" not in line
    assert not (d / "b.safetensors").exists()
    rc, _, err = run(_train(d / "style.png", d / "data", d / "c.safetensors", "--backend", backend,
                            "--checkpoint-dir", d / "ck"), capsys)
    assert_usage_error(rc, err, f"{d / 'ck'}: already holds this run's checkpoints", "--resume",
                       "another --checkpoint-dir")
    assert not (d / "c.safetensors").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_train_on_no_readable_image(backend, cli_dir, capsys):
    from cli_helpers import assert_usage_error, run
    pytest.importorskip("torch" if backend == "torch" else "tensorflow")
    d = cli_dir
    bad = _broken_folder(d / "bad")
    rc, _, err = run(_train(d / "style.png", bad, d / "m.safetensors", "--backend", backend, "--batch-size", "1",
                            "--steps", "10", "--checkpoint-dir", d / "ck"), capsys)
    assert_usage_error(rc, err, f"{bad}: no readable training image in 3 step(s) (3 of 3 image(s) skipped",
                       "no model was trained")
    assert not (d / "m.safetensors").exists()
    assert checkpoints.list_checkpoints(d / "ck") == []


def test_adain_style_folder_difference_names_its_counts():
    """AdaIN's style part is a folder listing (n_items, hash): the refusal says how many images."""
    from resty.run_identity import identity_differences
    old, new = {"style": {"n_items": 3, "hash": "a" * 64}}, {"style": {"n_items": 4, "hash": "b" * 64}}
    (line,) = identity_differences(old, new)
    assert "checkpoint 3 image(s)" in line and "this run 4 image(s)" in line and "None" not in line
