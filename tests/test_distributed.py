"""Distributed training and batch stylization on this CPU machine (issue 8).

Every test starts 2 real processes: torch through ``torchrun`` with gloo, TF as 2 workers of a
``MultiWorkerMirroredStrategy`` on loopback ports (``TF_CONFIG``).  The reference is always the
single-process fit with the same global batch, run in the test process.

This file is also the worker script: ``python tests/test_distributed.py torch-fit ...`` /
``tf-fit ...`` (TF workers never import torch).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH, SIZE = 4, 4, 32
# float64: in float32 this tiny problem is chaotic under Adam (sign-like first steps): two
# single-process float32 runs with 1 vs 2 OpenMP threads already differ by one Adam step
# (1.07e-3 on conv_in weights of magnitude 7.8e-3 after 4 steps), as much as DDP does.
# float64 shows the distributed step is the single-process step up to summation order.
DTYPE = "float64"


# =========================================================================== shared setup
def tiny_preset():
    from resty import presets
    p = presets.get("johnson2016")
    return p.replace(name="tiny-dist",
                     transformer=p.transformer.replace(channels=(8, 16, 32), residual_blocks=1),
                     training=p.training.replace(image_size=SIZE, batch_size=BATCH, num_workers=0, log_every=2,
                                                 checkpoint_every=2, keep_checkpoints=4, style_size=None))


def make_data(d: Path) -> Path:
    from PIL import Image
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray((rng.random((36 + 3 * i, 40 + i, 3)) * 255).astype(np.uint8)).save(d / f"p{i}.png")
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(d.parent / "style.png")
    return d


def fit_kwargs(args) -> dict:
    return dict(steps=args.steps, checkpoint_dir=args.ckdir, resume=args.resume, seed=0, num_workers=0)


# =========================================================================== workers
def _worker(argv):
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("backend", choices=("torch-fit", "tf-fit"))
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--ckdir", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--stop-at", type=int, default=None)      # callback returns True there
    ap.add_argument("--sigterm-at", type=int, default=None)   # rank 1 SIGTERMs itself there
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from resty.distributed import process_info
    info = process_info()
    style = str(Path(args.data).parent / "style.png")

    def callback(step, losses, _):
        if args.sigterm_at is not None and step == args.sigterm_at and info.rank == 1:
            import signal
            os.kill(os.getpid(), signal.SIGTERM)
        return args.stop_at is not None and step == args.stop_at

    if args.backend == "torch-fit":
        import resty_torch as rt
        f = rt.FastStylizer(tiny_preset(), weights="random:0", device="cpu", dtype=DTYPE)
    else:
        import resty_tf as rtf
        f = rtf.FastStylizer(tiny_preset(), weights="random:0", device="cpu", dtype=DTYPE)
    summary = f.fit(args.data, style, callback=callback, **fit_kwargs(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"weights-rank{info.rank}.npz", **f.net.state_dict_canonical())
    keep = {k: summary[k] for k in ("steps", "start_step", "stopped", "history", "images_seen",
                                    "images_per_second", "world_size", "rank") if k in summary}
    (out / f"summary-rank{info.rank}.json").write_text(json.dumps(keep))


def tiny_adain():
    from resty.adain import get_adain_preset
    p = get_adain_preset("pytorch-adain")
    return p.replace(name="tiny-adain-dist", adain=p.adain.replace(decoder_widths=(8, 6, 4), load_size=40),
                     training=p.training.replace(num_workers=0))


def make_styles(d: Path) -> Path:
    from PIL import Image
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray((rng.random((34 + 2 * i, 44 - i, 3)) * 255).astype(np.uint8)).save(d / f"s{i}.png")
    return d


def adain_fit_kwargs(steps: int = STEPS) -> dict:
    return dict(steps=steps, batch_size=BATCH, image_size=SIZE, lr=1e-3, seed=0, num_workers=0)


def _adain_worker(backend, argv):
    """``torch-adain-fit|tf-adain-fit DATA STYLES OUT``: the AdaIN decoder trained by this rank
    (torchrun / a MultiWorkerMirroredStrategy worker; TF workers never import torch)."""
    sys.path.insert(0, str(ROOT))
    from resty.distributed import process_info
    data, styles, out = argv
    if backend == "torch":
        import resty_torch as rt
        from resty_torch import adain as badain
    else:
        import resty_tf as rt
        from resty_tf import adain as badain
    local = []                      # the pairs this rank trained on, per step
    train = badain._Session._train
    badain._Session._train = lambda self, c, *a: (local.append(len(c)), train(self, c, *a))[1]
    f = rt.AdaINStylizer(tiny_adain(), weights="random:0", device="cpu", dtype=DTYPE)
    summary = f.fit(data, styles, **adain_fit_kwargs())
    summary["local_pairs"] = local
    rank = process_info().rank
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"weights-rank{rank}.npz", **f.net.state_dict_canonical())
    keep = {k: summary[k] for k in ("steps", "history", "images_seen", "world_size", "rank", "local_pairs")}
    (out / f"summary-rank{rank}.json").write_text(json.dumps(keep))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] in ("torch-fit", "tf-fit"):
    _worker(sys.argv[1:])
    sys.exit(0)
if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] in ("torch-adain-fit", "tf-adain-fit"):
    _adain_worker(sys.argv[1].split("-")[0], sys.argv[2:])
    sys.exit(0)


# =========================================================================== tests
import pytest  # noqa: E402

from resty import distributed as rdist  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["OMP_NUM_THREADS"] = "1"        # 2 processes on 2 shared cores
    return env


def _launch(backend, args, timeout=240):
    cmd = [str(Path(__file__)), *args]
    env = {k: v for k, v in _env().items() if k not in os.environ or os.environ[k] != v}
    if backend == "torch":
        return rdist.launch_torch(2, cmd, env=env, timeout=timeout)
    return rdist.launch_tf(2, cmd, env=env, timeout=timeout)


def _weights(path: Path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _assert_close(a, b, what):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-11, err_msg=f"{what}: {k}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("dist") / "photos")


# ---------------------------------------------------------------- core helpers (no framework)
def test_shards_and_tf_config():
    assert [rdist.shard_bounds(4, r, 2) for r in range(2)] == [(0, 2), (2, 4)]
    assert [rdist.shard_bounds(5, r, 3) for r in range(3)] == [(0, 2), (2, 4), (4, 5)]
    assert [rdist.shard_bounds(1, r, 2) for r in range(2)] == [(0, 1), (1, 1)]
    items = list(range(7))
    parts = [rdist.split_items(items, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == items
    ports = rdist.free_ports(3)
    assert len(set(ports)) == 3
    cfg = rdist.tf_config([f"127.0.0.1:{p}" for p in ports], 2)
    info = rdist.process_info({"TF_CONFIG": cfg})
    assert (info.rank, info.world_size, info.source) == (2, 3, "tf_config")
    info = rdist.process_info({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TF_CONFIG": cfg})
    assert (info.rank, info.world_size, info.source) == (1, 2, "torchrun")
    assert rdist.process_info({}).world_size == 1 and not rdist.is_launched_child({})


# ---------------------------------------------------------------- torch
def _ckpt_net(ck: Path, step: int):
    from resty import checkpoints
    tensors, meta = checkpoints.load_checkpoint(ck / checkpoints.checkpoint_stem(step))
    return {k: v for k, v in tensors.items() if k.startswith(("net.", "opt."))}, meta


@pytest.fixture(scope="module")
def torch_reference(data, tmp_path_factory):
    import resty_torch as rt
    ck = tmp_path_factory.mktemp("torch_ref_ck")
    f = rt.FastStylizer(tiny_preset(), weights="random:0", device="cpu", dtype=DTYPE)
    s = f.fit(str(data), str(data.parent / "style.png"), steps=STEPS, seed=0, num_workers=0, checkpoint_dir=str(ck))
    return f.net.state_dict_canonical(), s, ck


def test_torch_ddp_equals_single_process(data, torch_reference, tmp_path):
    ref, ref_summary, _ = torch_reference
    assert _launch("torch", ["torch-fit", str(data), str(tmp_path / "full")]) == 0
    w0 = _weights(tmp_path / "full" / "weights-rank0.npz")
    w1 = _weights(tmp_path / "full" / "weights-rank1.npz")
    _assert_close(w0, ref, "DDP rank 0 vs single process")
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k])
    s0 = json.loads((tmp_path / "full" / "summary-rank0.json").read_text())
    s1 = json.loads((tmp_path / "full" / "summary-rank1.json").read_text())
    assert s0["world_size"] == 2 and s0["images_seen"] == STEPS * BATCH == ref_summary["images_seen"]
    assert s0["history"] == s1["history"]            # aggregated over ranks, same on each
    for a, b in zip(s0["history"], ref_summary["history"]):
        assert a["step"] == b["step"]
        np.testing.assert_allclose(a["total"], b["total"], rtol=1e-10)


def test_torch_resume_across_nproc_and_sigterm(data, torch_reference, tmp_path):
    """1 process to step 1 (callback stop); 2 processes resume, rank 1 gets SIGTERM after
    step 3: every rank stops at that step boundary, rank 0 writes step 3, rank 1 then dies of
    the signal; 1 process resumes to the end.  Checkpoints (weights and Adam moments) and the
    final weights equal the uninterrupted single-process run's."""
    ref, _, ref_ck = torch_reference
    ck = tmp_path / "ck"
    import resty_torch as rt
    from resty import checkpoints
    f = rt.FastStylizer(tiny_preset(), weights="random:0", device="cpu", dtype=DTYPE)
    f.fit(str(data), str(data.parent / "style.png"), steps=STEPS, seed=0, num_workers=0,
          checkpoint_dir=str(ck), callback=lambda step, *_: step == 1)
    assert [s for s, _ in checkpoints.list_checkpoints(ck)] == [1]
    rc = _launch("torch", ["torch-fit", str(data), str(tmp_path / "term"), "--ckdir", str(ck),
                           "--resume", "--sigterm-at", "3"])
    assert rc != 0                                   # a worker died of SIGTERM
    assert [s for s, _ in checkpoints.list_checkpoints(ck)] == [1, 2, 3]
    got, meta = _ckpt_net(ck, 2)
    want, ref_meta = _ckpt_net(ref_ck, 2)
    _assert_close(got, want, "checkpoint at step 2 (2 processes) vs single process")
    assert [h["step"] for h in meta["history"]] == [1, 2]
    f = rt.FastStylizer(tiny_preset(), weights="random:0", device="cpu", dtype=DTYPE)
    s = f.fit(str(data), str(data.parent / "style.png"), steps=STEPS, seed=0, num_workers=0,
              checkpoint_dir=str(ck), resume=True)
    assert s["start_step"] == 3 and [h["step"] for h in s["history"]] == [1, 2, 3, 4]
    _assert_close(f.net.state_dict_canonical(), ref, "1 proc -> 2 procs (SIGTERM) -> 1 proc")


# ---------------------------------------------------------------- TF (MultiWorkerMirroredStrategy)
@pytest.fixture(scope="module")
def tf_reference(data, tmp_path_factory):
    import resty_tf as rtf
    ck = tmp_path_factory.mktemp("tf_ref_ck")
    f = rtf.FastStylizer(tiny_preset(), weights="random:0", device="cpu", dtype=DTYPE)
    s = f.fit(str(data), str(data.parent / "style.png"), steps=STEPS, seed=0, num_workers=0, checkpoint_dir=str(ck))
    return f.net.state_dict_canonical(), s, ck


def test_tf_multiworker_equals_single_process_and_resumes(data, tf_reference, tmp_path):
    """2 MultiWorkerMirroredStrategy workers train to step 2 (a callback stops them); their
    weights and the chief's checkpoint (weights + Adam moments) equal the single-process run at
    step 2; one process resumes to the end and equals the uninterrupted run."""
    ref, ref_summary, ref_ck = tf_reference
    ck = tmp_path / "ck"
    assert _launch("tf", ["tf-fit", str(data), str(tmp_path / "w"), "--ckdir", str(ck), "--stop-at", "2"]) == 0
    from resty import checkpoints
    assert [s for s, _ in checkpoints.list_checkpoints(ck)] == [2]
    got, meta = _ckpt_net(ck, 2)
    want, _ = _ckpt_net(ref_ck, 2)
    _assert_close(got, want, "MWMS checkpoint at step 2 vs single process")
    w0 = _weights(tmp_path / "w" / "weights-rank0.npz")
    w1 = _weights(tmp_path / "w" / "weights-rank1.npz")
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k])
    s0 = json.loads((tmp_path / "w" / "summary-rank0.json").read_text())
    assert s0["world_size"] == 2 and s0["images_seen"] == 2 * BATCH
    for a, b in zip(s0["history"], ref_summary["history"][:2]):
        np.testing.assert_allclose(a["total"], b["total"], rtol=1e-10)

    import resty_tf as rtf
    f = rtf.FastStylizer(tiny_preset(), weights="random:0", device="cpu", dtype=DTYPE)
    s = f.fit(str(data), str(data.parent / "style.png"), steps=STEPS, seed=0, num_workers=0,
              checkpoint_dir=str(ck), resume=True)
    assert s["start_step"] == 2
    _assert_close(f.net.state_dict_canonical(), ref, "2 TF workers to step 2, then 1 process")


# ---------------------------------------------------------------- batch stylization
def test_stylize_folder_two_processes_each_output_once(data, tmp_path):
    import resty_torch as rt
    model = tmp_path / "m.safetensors"
    rt.FastStylizer(tiny_preset(), weights="random:0", device="cpu").save(model)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "resty", "stylize", str(data), "-o", str(out), "--method", "fast",
           "--model", str(model), "--weights", "random:0", "--nproc", "2", "-q"]

    def run():
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-2000:]
        return [line.split(" -> ")[1].split(" (")[0] for line in r.stdout.splitlines() if " -> " in line]

    written = run()
    expected = sorted(str(out / (p.stem + ".png")) for p in data.iterdir())
    assert sorted(written) == expected                   # every output exactly once, 2 processes
    assert sorted(str(p) for p in out.iterdir()) == expected     # no temporary files left
    (out / "p3.png").unlink()
    assert run() == [str(out / "p3.png")]                # a re-run only finishes what is missing


# ---------------------------------------------------------------- AdaIN (the same driver, torch DDP)
@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_adain_two_processes_equal_one(backend, data, tmp_path):
    """2 processes (torch: torchrun + DDP; TF: MultiWorkerMirroredStrategy workers) train an
    AdaIN decoder, each on its half of every global batch of (content, style) pairs: the decoder
    equals one process's with the same global batch (float64, to summation order), on both ranks,
    and the booked losses and image counts are the global ones."""
    from resty.backends import get_backend
    rt = get_backend(backend)
    styles = make_styles(tmp_path / "styles")
    ref = rt.AdaINStylizer(tiny_adain(), weights="random:0", device="cpu", dtype=DTYPE)
    ref_summary = ref.fit(str(data), str(styles), **adain_fit_kwargs())
    assert _launch(backend, [f"{backend}-adain-fit", str(data), str(styles), str(tmp_path / "out")]) == 0
    w0 = _weights(tmp_path / "out" / "weights-rank0.npz")
    w1 = _weights(tmp_path / "out" / "weights-rank1.npz")
    _assert_close(w0, ref.net.state_dict_canonical(), f"AdaIN {backend} rank 0 of 2 vs single process")
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k])
    s0 = json.loads((tmp_path / "out" / "summary-rank0.json").read_text())
    s1 = json.loads((tmp_path / "out" / "summary-rank1.json").read_text())
    assert s0["world_size"] == 2 and s0["images_seen"] == STEPS * BATCH == ref_summary["images_seen"]
    assert s0["history"] == s1["history"]
    assert s0["local_pairs"] == s1["local_pairs"] == [BATCH // 2] * STEPS     # each rank its half
    for a, b in zip(s0["history"], ref_summary["history"]):
        assert a["step"] == b["step"]
        np.testing.assert_allclose([a["total"], a["content"], a["style"]], [b["total"], b["content"], b["style"]],
                                   rtol=1e-10)
    # the run moved the decoder (the comparison is not of two untouched initialisations)
    init = get_backend("torch").AdaINStylizer(tiny_adain(), weights="random:0", device="cpu",
                                              dtype=DTYPE).net.state_dict_canonical()
    assert max(np.abs(w0[k] - init[k]).max() for k in init) > 1e-4


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_cli_train_adain_nproc(backend, data, tmp_path):
    """``resty train --method adain --nproc 2`` writes one decoder, from rank 0 (the TF chief),
    and says so once."""
    styles = make_styles(tmp_path / "styles")
    out = tmp_path / "dec.safetensors"
    cmd = [sys.executable, "-m", "resty", "train", "--method", "adain", "--data", str(data), "--styles", str(styles),
           "--out", str(out), "--steps", "2", "--batch-size", "2", "--image-size", "32", "--weights", "random:0",
           "--backend", backend, "--nproc", "2"]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["dec.safetensors", "styles"]
    assert r.stdout.count("trained to step 2 ") == 1 and "on 2 processes" in r.stdout     # rank 0 only
    from resty.weights import load_weights
    assert load_weights(out, expect="adain").extra["steps"] == 2
