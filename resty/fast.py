"""Johnson et al. 2016, written once for both backends: :class:`FastStylizerBase` owns the
training driver (arguments, batch schedule, the step loop's books: history, skipped files,
progress, callbacks, checkpoints and the resume check, SIGTERM, the summary), the stylize loop,
saving and loading, and the model file's metadata <-> preset.  A backend subclasses it and
supplies the framework operations only: a training session (optimizer, data pipeline, one
training step) and a network forward (docs/ARCHITECTURE.md)."""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .checkpoints import (adam_state_from_tensors, adam_state_to_tensors, latest_checkpoint, load_checkpoint,
                          save_checkpoint)
from .errors import ArgumentError, RestyError, TrainingError
from .images import resize_longest
from .inference import stylize_images
from .inputs import blend_grams, integer_arg, prepare_styles
from .losses import LOSS_TERMS
from .presets import Preset, get as get_preset, resolve
from .distributed import SingleProcess
from .runtime import Progress, SigtermFlag, nonfinite_message
from .training_data import BatchSchedule, item_name, list_training_images
from .weights import WeightSet, load_weights, save_weights

__all__ = ["FastStylizerBase", "TrainingPlan", "TrainingSession", "StepOutcome", "model_preset"]


def model_preset(ws: WeightSet) -> Preset:
    """The preset a saved transformer was trained with (its metadata), its spec the file's own;
    ``johnson2016`` with the file's spec for a file without one."""
    saved = ws.extra.get("preset")
    preset = resolve(saved) if saved else get_preset("johnson2016")
    return preset if preset.transformer == ws.spec else preset.replace(transformer=ws.spec)


@dataclass
class TrainingPlan:
    """One ``fit`` call's settings (the preset's training config, overridden by its arguments)
    and its data: the items and their batch schedule."""
    items: List[Any]
    schedule: BatchSchedule
    total_steps: int
    image_size: int
    seed: int
    num_workers: int
    lr: Optional[float]
    checkpoint_dir: Optional[str]
    checkpoint_every: int

    @property
    def batch_size(self) -> int:
        return self.schedule.batch_size

    @property
    def settings(self) -> Dict[str, Any]:
        """What a checkpoint must share with the run that resumes it."""
        return {"n_items": len(self.items), "batch_size": self.batch_size, "image_size": self.image_size,
                "seed": self.seed, "lr": self.lr}

    def item_names(self, step: int, slots: Sequence[int]) -> List[str]:
        """Names of the items in ``slots`` of the global batch of ``step`` (0-based)."""
        idx = self.schedule.batch(step)
        return [item_name(self.items[idx[j]], idx[j]) for j in slots if j < len(idx)]


@dataclass
class StepOutcome:
    """One training step as the driver books it: the terms ``[total, content, style, tv]`` of
    the global batch (None when no item of it was readable: no update), the unreadable slots of
    the global batch, and the number of images trained on."""
    terms: Optional[np.ndarray]
    bad_slots: Sequence[int]
    images: int


class TrainingSession:
    """What a backend supplies for one ``fit``: the optimizer, the data pipeline and the
    training step, and its distributed context.  The driver calls, in order: ``__enter__``,
    optionally ``load_optimizer_state``/``load_rng_state`` (resume), ``start(style_grams,
    start_step)``, then iterates ``steps(term)`` and reads finished steps back with
    ``resolve``; ``optimizer_state``/``rng_state`` when it writes a checkpoint."""

    #: The process group: ``rank``, ``world_size``, ``is_main``, ``barrier()``, ``any(flag)``
    #: (True on every process when ``flag`` is True on any).
    dist: Any = SingleProcess()
    #: Whether SIGTERM can stop this run cleanly (every process must agree on the step).
    handles_sigterm = True

    def __enter__(self) -> "TrainingSession":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def start(self, style_grams: Mapping[str, Any], start_step: int) -> None:
        raise NotImplementedError

    def steps(self, term: SigtermFlag) -> Iterator[Tuple[int, Any]]:
        """``(step, handle)`` for steps ``start_step .. total-1`` (0-based), each trained when
        it is yielded; ``handle`` is resolved later, so the device is not waited for each step.
        Stops early once ``term.hit`` (agreed across processes)."""
        raise NotImplementedError

    def resolve(self, handles: Sequence[Any]) -> List[StepOutcome]:
        raise NotImplementedError

    def optimizer_state(self) -> Tuple[int, Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """``(step, exp_avg, exp_avg_sq)`` by canonical parameter name and layout."""
        raise NotImplementedError

    def load_optimizer_state(self, step: int, exp_avg: Mapping[str, np.ndarray],
                             exp_avg_sq: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def rng_state(self) -> Dict[str, Any]:
        """Framework RNG state to restore on resume (crops and order need none: they are pure
        functions of the seed and step)."""
        return {}

    def load_rng_state(self, rng: Mapping[str, Any]) -> None:
        pass



class FastStylizerBase:
    """What both backends' ``FastStylizer`` share (the public API is here).  A subclass sets
    ``self.preset``, ``self.net`` (with ``state_dict_canonical``/``load_canonical``),
    ``self.precision`` and ``self.dtype`` (calling :meth:`_init_books`) and supplies:

    * ``_grams_of(style)``: the Gram matrices of one style image by layer (its loss network);
    * ``_training_session(plan, **options)``: a :class:`TrainingSession`;
    * ``_forward(batch, full_precision)``: the network on a B×H×W×3 batch, clamped to [0, 1];
    * ``_weights_key()``: a value that changes whenever the weights change;
    * ``_writes_files()`` (False on the processes of a distributed run that must not write),
      ``_eval_mode()`` (called before inference).
    """

    backend_name = ""          # "torch" or "tf": recorded in checkpoints
    engine_name = ""           # what stylize runs on without the ONNX Runtime fast path

    preset: Preset
    precision: Any
    dtype: Any

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _resolve_model(preset: Any, transformer_weights: Any) -> Tuple[Preset, Any]:
        """The preset and the transformer weights to build: a WeightSet brings its own spec;
        without weights, the preset's seeded random initialisation."""
        p = resolve(preset)
        tw = transformer_weights if transformer_weights is not None else f"random:{p.training.seed}"
        if isinstance(tw, WeightSet) and tw.spec != p.transformer:
            p = p.replace(transformer=tw.spec)
        return p, tw

    def _init_books(self, fast: bool, on_cpu: bool, refuse: Mapping[str, bool]) -> None:
        """Training books, and the ONNX Runtime fast path for ``fast=True`` on a CPU unless one
        of ``refuse`` (reason -> applies) holds."""
        from .onnx_runtime import CpuFastPath
        self._cpu_fast, self.fast_path_note = None, None
        if fast and on_cpu:
            self._cpu_fast, self.fast_path_note = CpuFastPath.for_stylizer(self.preset.transformer, dict(refuse))
        self.history: List[Dict[str, Any]] = []
        self.skipped: List[str] = []
        self.skipped_count = 0
        self.step = 0

    @property
    def vgg(self):
        """The loss network, built on first use: a trained model stylises without it."""
        if getattr(self, "_vgg", None) is None:
            self._vgg = self._build_vgg()
        return self._vgg

    def _writes_files(self) -> bool:
        return True

    def _eval_mode(self) -> None:
        pass

    def _fast_path_allowed(self) -> bool:
        return True

    # ------------------------------------------------------------------ training
    def _plan(self, images, steps, epochs, batch_size, image_size, seed, num_workers, lr, checkpoint_dir,
              checkpoint_every) -> TrainingPlan:
        tc = self.preset.training
        if steps is None and epochs is None:
            steps, epochs = tc.steps, tc.epochs
        steps = None if steps is None else integer_arg(steps, "steps", 0)
        epochs = None if epochs is None else integer_arg(epochs, "epochs", 0)
        bs = tc.batch_size if batch_size is None else integer_arg(batch_size, "batch_size", 1)
        size = tc.image_size if image_size is None else integer_arg(image_size, "image_size", 1)
        items = list_training_images(images)
        sched = BatchSchedule(len(items), bs, integer_arg(tc.seed if seed is None else seed, "seed", 0))
        if lr is not None:
            try:
                ok = float(lr) > 0 and np.isfinite(float(lr))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ArgumentError(f"lr: got {lr!r}; need a positive number")
        return TrainingPlan(
            items=items, schedule=sched, total_steps=sched.total_steps(steps, epochs), image_size=size,
            seed=sched.seed, num_workers=integer_arg(tc.num_workers if num_workers is None else num_workers,
                                                    "num_workers", 0),
            lr=float(lr if lr is not None else tc.adam.lr),
            checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
            checkpoint_every=integer_arg(tc.checkpoint_every if checkpoint_every is None else checkpoint_every,
                                         "checkpoint_every", 1))

    def _style_grams(self, style, style_weights, style_size) -> Dict[str, Any]:
        """``Σ w_i G_i`` of the style image(s), each resized to longest side ``style_size``."""
        styles, blend = prepare_styles(style, style_weights)
        if style_size is not None:
            styles = [resize_longest(s, style_size) for s in styles]
        return blend_grams(styles, blend, self._grams_of)

    def fit(self, images, style, *, steps=None, epochs=None, batch_size=None, image_size=None,
            checkpoint_dir=None, checkpoint_every=None, resume=False, seed=None, num_workers=None,
            progress=False, callback=None, lr=None, style_weights=None, **options) -> Dict[str, Any]:
        """Train the transformer on ``images`` (a folder, a list of paths, or an iterable of
        arrays) to reproduce ``style`` (one image, or several blended by ``style_weights``).
        Returns a summary dict (steps, history, skipped, images per second, ...).

        Batches are a pure function of ``(seed, step)`` (resty.training_data), so
        ``resume=True`` continues from the newest checkpoint in ``checkpoint_dir`` to the same
        weights an uninterrupted run reaches, in either backend.  Unreadable images are
        skipped and listed in ``skipped``.  ``callback(step, losses, None)`` returning True
        stops (after writing a checkpoint when a directory is given).  A non-finite loss
        raises TrainingError naming the step.  ``options`` are the backend's own."""
        plan = self._plan(images, steps, epochs, batch_size, image_size, seed, num_workers, lr, checkpoint_dir,
                          checkpoint_every)
        tc = self.preset.training
        ckdir = plan.checkpoint_dir
        with self._training_session(plan, **options) as session:
            start = 0
            if not resume:
                self.history, self.skipped, self.skipped_count = [], [], 0
            elif ckdir is not None and latest_checkpoint(ckdir) is not None:
                # Every process reads the same checkpoint (a shared folder).
                start = self._restore(latest_checkpoint(ckdir), plan, session)
            session.start(self._style_grams(style, style_weights, tc.style_size), start)
            total = plan.total_steps
            pending: List[Tuple[int, Any]] = []
            last_ck = start
            seen = 0
            stopped = False
            self.step = start
            t0 = time.perf_counter()

            def flush() -> None:
                nonlocal seen
                outcomes = session.resolve([h for _, h in pending])
                steps_done = [s for s, _ in pending]
                pending.clear()
                for done, out in zip(steps_done, outcomes):
                    names = plan.item_names(done - 1, out.bad_slots)
                    self.skipped_count += len(names)
                    self.skipped.extend(n for n in names if n not in self.skipped)
                    seen += out.images
                    if out.terms is None:
                        self.history.append({"step": done, "skipped_batch": True})
                        continue
                    if not np.isfinite(out.terms[0]):
                        raise TrainingError(nonfinite_message(float(out.terms[0]), done))
                    self.history.append({"step": done, **dict(zip(LOSS_TERMS, map(float, out.terms)))})

            def last_terms() -> Dict[str, float]:
                last = self.history[-1] if self.history else {}
                return {k: last[k] for k in LOSS_TERMS if k in last}

            def checkpoint(step: int) -> None:
                if session.dist.is_main:
                    self._save_checkpoint(plan, step, session)
                session.dist.barrier()          # nobody reads a checkpoint before it is complete

            with SigtermFlag(ckdir is not None and session.handles_sigterm) as term, \
                    Progress(max(0, total - start), progress and session.dist.is_main, desc="fit", unit="step") as bar:
                for s, handle in session.steps(term):
                    done = s + 1
                    pending.append((done, handle))
                    due_ck = ckdir is not None and done % plan.checkpoint_every == 0
                    if callback is not None or due_ck or done % tc.log_every == 0 or done == total:
                        k = len(pending)
                        flush()
                        post: Dict[str, float] = last_terms()
                        elapsed = time.perf_counter() - t0
                        if elapsed > 0:
                            post["img/s"] = seen / elapsed
                        bar.update(k, post)
                    self.step = done
                    if due_ck:
                        checkpoint(done)
                        last_ck = done
                    if callback is not None and session.dist.any(bool(callback(done, last_terms(), None))):
                        stopped = True         # every process stops at the same step
                        break
                flush()
                stopped = stopped or term.hit
                if ckdir is not None and self.step > last_ck:
                    checkpoint(self.step)
        seconds = time.perf_counter() - t0
        if term.hit:
            term.redeliver(self.step, ckdir)   # dies of SIGTERM now, the checkpoint written
        return {"steps": self.step, "start_step": start, "total_steps": total, "stopped": stopped,
                "history": self.history, "skipped": list(self.skipped), "skipped_count": self.skipped_count,
                "images_seen": seen, "seconds": seconds,
                "images_per_second": seen / seconds if seconds > 0 else float("nan"),
                "world_size": session.dist.world_size, "rank": session.dist.rank,
                "checkpoint": str(latest_checkpoint(ckdir)) if ckdir else None}

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, plan: TrainingPlan, step: int, session: TrainingSession) -> Path:
        epoch, pos = plan.schedule.epoch_position(step)
        tensors = {f"net.{k}": v for k, v in self.net.state_dict_canonical().items()}
        tensors.update(adam_state_to_tensors(*session.optimizer_state()))
        meta = {"step": step, "epoch": epoch, "position": pos, "total_steps": plan.total_steps,
                "settings": plan.settings, "rng": session.rng_state(), "history": self.history,
                "skipped": self.skipped, "skipped_count": self.skipped_count, "preset": self.preset.to_dict(),
                "backend": self.backend_name, "dtype": self._dtype_name()}
        return save_checkpoint(plan.checkpoint_dir, step, tensors, meta, keep=self.preset.training.keep_checkpoints)

    def _restore(self, path, plan: TrainingPlan, session: TrainingSession) -> int:
        tensors, meta = load_checkpoint(path)
        old = meta.get("settings", {})
        diff = {k: (old.get(k), v) for k, v in plan.settings.items() if old.get(k) != v}
        if diff:
            raise RestyError(f"{path}: cannot resume: the checkpoint was made with different settings "
                             f"({', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in diff.items())})")
        self.net.load_canonical({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        step, m, v = adam_state_from_tensors(tensors)
        if m:
            session.load_optimizer_state(step, m, v)
        session.load_rng_state(meta.get("rng", {}))
        self.history = list(meta.get("history", []))
        self.skipped = list(meta.get("skipped", []))
        self.skipped_count = int(meta.get("skipped_count", 0))
        return int(meta["step"])

    def _dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    # ------------------------------------------------------------------ inference
    @property
    def inference_engine(self) -> str:
        """What :meth:`stylize` runs on: ``"onnxruntime"`` (``fast=True`` on the CPU, see
        ``fast_path_note`` when not) or the backend's framework."""
        return "onnxruntime" if self._cpu_fast is not None else self.engine_name

    def _canonical_weightset(self) -> WeightSet:
        return WeightSet(self.net.state_dict_canonical(), "transformer", spec=self.preset.transformer)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """The network on a B×H×W×3 batch -> B×H×W×3 in [0, 1]."""
        if self._cpu_fast is not None and self._fast_path_allowed():
            y = self._cpu_fast.run(np.asarray(batch, np.float32).transpose(0, 3, 1, 2), self._weights_key(),
                                   self._canonical_weightset)
            return np.clip(y.transpose(0, 2, 3, 1), 0.0, 1.0)
        out = self._forward(batch, full_precision=False)
        if self.precision is not None and not np.isfinite(out).all():
            # float16 tops out at 65504: a trained net whose activations exceed it gives inf/NaN.
            # Recompute this batch in full precision rather than return a broken image.
            warnings.warn(f"{self.precision} inference gave non-finite values (overflow); this batch was "
                          f"recomputed in {self._dtype_name()} (use precision='bf16' or None for this model)",
                          RuntimeWarning, stacklevel=4)
            out = self._forward(batch, full_precision=True)
        return np.clip(out, 0.0, 1.0)

    def stylize(self, images, *, preserve_color=False, tile=None, overlap=32, batch_size=None):
        """Stylise one image (-> H×W×3 float32) or several (a list or a B×H×W×3 array -> a
        list, or an array for an array).  Each output has its input's size.  ``tile`` (px)
        runs large images in overlapping tiles blended with linear ramps (instance norm then
        sees per-tile statistics; a larger ``overlap`` hides the seams better)."""
        self._eval_mode()
        return stylize_images(images, self._run, preserve_color=preserve_color, tile=tile, overlap=overlap,
                              batch_size=batch_size)

    # ------------------------------------------------------------------ files
    def save(self, path, *, overwrite=False) -> Path:
        """The canonical safetensors file (resty.weights) with the TransformerSpec and the preset
        in its metadata: loadable by either backend.  In a distributed run only the main
        process writes (the others return the path)."""
        if not self._writes_files():
            return Path(os.fspath(path))
        tensors = {k: v if v.dtype == np.float64 else np.asarray(v, np.float32)
                   for k, v in self.net.state_dict_canonical().items()}
        ws = WeightSet(tensors, "transformer", source=f"{type(self).__module__.split('.')[0]} FastStylizer "
                       f"({self.preset.name})", spec=self.preset.transformer,
                       extra={"preset": self.preset.to_dict(), "steps": int(self.step),
                              "skipped_count": int(self.skipped_count)})
        return save_weights(path, ws, overwrite=overwrite)

    @classmethod
    def load(cls, path, *, weights="imagenet", device=None, dtype="float32", **kw) -> "FastStylizerBase":
        """A stylizer from a file written by :meth:`save` (either backend)."""
        ws = load_weights(path, expect="transformer")
        obj = cls(model_preset(ws), weights=weights, device=device, dtype=dtype, transformer_weights=ws, **kw)
        obj.step = int(ws.extra.get("steps", 0))
        return obj

    # ------------------------------------------------------------------ backend operations
    def _build_vgg(self):
        raise NotImplementedError

    def _grams_of(self, style: np.ndarray) -> Dict[str, Any]:
        raise NotImplementedError

    def _training_session(self, plan: TrainingPlan, **options) -> TrainingSession:
        raise NotImplementedError

    def _forward(self, batch: np.ndarray, full_precision: bool) -> np.ndarray:
        raise NotImplementedError

    def _weights_key(self) -> Any:
        raise NotImplementedError
