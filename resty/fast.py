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

from .checkpoints import (adam_state_from_tensors, adam_state_to_tensors, checkpoint_run_id,
                          list_checkpoints, load_checkpoint, save_checkpoint)
from .errors import ArgumentError, ImageError, RestyError, TrainingError, one_line
from .images import resize_longest
from .inference import stylize_images
from .inputs import blend_grams, integer_arg, prepare_styles, style_vector
from .losses import LOSS_TERMS
from .presets import Preset, get as get_preset, resolve
from .distributed import SingleProcess
from .run_identity import (IDENTITY_VERSION, data_identity, identity_differences, loss_network_identity,
                           preset_identity, run_id, style_identity)
from .runtime import Progress, SigtermFlag, nonfinite_message
from .training_data import BatchSchedule, item_name, list_training_images
from .weights import WeightSet, load_weights, save_weights

__all__ = ["FastStylizerBase", "TrainingPlan", "TrainingSession", "StepOutcome", "model_preset"]


#: The largest training crop (px): a batch of larger crops does not fit in any memory.
MAX_CROP = 4096


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
    #: How the training data is named in messages: its folder, or ``<training images>``.
    source: str = "<training images>"
    #: The training data's part of the run identity (resty.run_identity.data_identity).
    data: Optional[Dict[str, Any]] = None
    #: Networks trained on style images too (AdaIN, resty.adain): the style items, drawn one per
    #: slot by their own schedule (seeded differently; batch size 1: global slot position
    #: ``step·batch_size + slot`` indexes its sequence), their identity; None for one fixed style.
    #: Their unreadable slots are reported as ``batch_size + slot``.
    styles: Optional[List[Any]] = None
    style_schedule: Optional[BatchSchedule] = None
    style_data: Optional[Dict[str, Any]] = None

    @property
    def batch_size(self) -> int:
        return self.schedule.batch_size

    @property
    def settings(self) -> Dict[str, Any]:
        """The settings a checkpoint records (the run identity, :meth:`identity_settings`, is
        what a resumed run must share with it; these alone were checked before identities)."""
        return {"n_items": len(self.items), "batch_size": self.batch_size, "image_size": self.image_size,
                "seed": self.seed, "lr": self.lr}

    def identity_settings(self, style_size: Optional[int]) -> Dict[str, Any]:
        """The settings part of the run identity: those that change every step's result (the
        total number of steps does not: a resumed run may go further)."""
        return {"batch_size": self.batch_size, "image_size": self.image_size, "seed": self.seed, "lr": self.lr,
                "style_size": style_size}

    def item_names(self, step: int, slots: Sequence[int]) -> List[str]:
        """Names of the items in ``slots`` of the global batch of ``step`` (0-based)."""
        idx = self.schedule.batch(step)
        names = [item_name(self.items[idx[j]], idx[j]) for j in slots if j < len(idx)]
        if self.styles is not None:
            for j in slots:
                if j >= self.batch_size:
                    k = self.style_index(step, j - self.batch_size)
                    names.append(item_name(self.styles[k], k))
        return names

    def style_index(self, step: int, slot: int) -> int:
        """The style item of ``slot`` of ``step`` (0-based; networks trained on style images)."""
        return self.style_schedule.batch(step * self.batch_size + slot)[0]


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
        size = tc.image_size if image_size is None else integer_arg(image_size, "image_size", self._min_side())
        if size > MAX_CROP:
            raise ArgumentError(f"image_size: got {size}; training crops are at most {MAX_CROP} px")
        items = list_training_images(images)
        source = os.fspath(images) if isinstance(images, (str, os.PathLike)) else "<training images>"
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
                                         "checkpoint_every", 1),
            source=source, data=data_identity(images, items) if checkpoint_dir is not None else None)

    def _style_grams(self, style, style_weights, style_size) -> Dict[str, Any]:
        """``Σ w_i G_i`` of the style image(s), each resized to longest side ``style_size``."""
        styles, blend = prepare_styles(style, style_weights)
        return self._blend_style_grams(styles, blend, style_size)

    def _fit_styles(self, plan: TrainingPlan, style, style_weights):
        """``(styles, blend)`` of ``fit``'s style argument; a network trained on style images
        (AdaIN) sets ``plan.styles`` instead and returns no fixed style."""
        return prepare_styles(style, style_weights)

    def _blend_style_grams(self, styles, blend, style_size) -> Dict[str, Any]:
        if style_size is not None:
            styles = [resize_longest(s, style_size) for s in styles]
        return blend_grams(styles, blend, self._grams_of)

    def fit(self, images, style, *, steps=None, epochs=None, batch_size=None, image_size=None,
            checkpoint_dir=None, checkpoint_every=None, resume=False, seed=None, num_workers=None,
            progress=False, callback=None, lr=None, style_weights=None, train_only=None, style_row=None,
            **options) -> Dict[str, Any]:
        """Train the transformer on ``images`` (a folder, a list of paths, or an iterable of
        arrays) to reproduce ``style`` (one image, or several blended by ``style_weights``).
        Returns a summary dict (steps, history, skipped, images per second, ...).

        Batches are a pure function of ``(seed, step)`` (resty.training_data), so
        ``resume=True`` continues from the newest checkpoint in ``checkpoint_dir`` to the same
        weights an uninterrupted run reaches, in either backend; it refuses a checkpoint of
        another run (resty.run_identity: preset, styles, loss network, data, settings) and
        skips an unreadable one with a warning.  Without ``resume`` a ``checkpoint_dir`` that
        already holds checkpoints is refused.  Unreadable images are skipped and listed in
        ``skipped``; no readable image at all raises ImageError.  ``callback(step, losses, None)`` returning True
        stops (after writing a checkpoint when a directory is given).  A non-finite loss
        raises TrainingError naming the step.  ``options`` are the backend's own.

        ``train_only="style_row"`` (a multi-style network, e.g. ``load("multistyle26",
        new_style=True)``): train only row ``style_row`` (default: the last) of every norm's
        gamma/beta table, the network run with that style; every other parameter is frozen (the
        backends' training sessions honour :meth:`_is_trainable`) and the other rows get exactly
        zero gradient, so they do not move (Dumoulin et al. 2017).  ``style_row=K`` alone (a
        multi-style network): every weight is fine-tuned with the network run at style ``K``."""
        self._setup_train_only(train_only, style_row)
        try:
            return self._fit(images, style, steps=steps, epochs=epochs, batch_size=batch_size,
                             image_size=image_size, checkpoint_dir=checkpoint_dir,
                             checkpoint_every=checkpoint_every, resume=resume, seed=seed, num_workers=num_workers,
                             progress=progress, callback=callback, lr=lr, style_weights=style_weights, **options)
        finally:
            self._train_filter = None

    def _setup_train_only(self, train_only, style_row) -> None:
        self._train_filter = None
        self._train_only = None
        if train_only is None:
            if style_row is not None:
                # Fine-tune every weight with the network run at row ``style_row`` (a multi-style
                # network, e.g. ``resty train --resume-from multistyle26 --style 19``).
                spec = self.preset.transformer
                if not spec.conditional:
                    raise ArgumentError(f"style_row: got {style_row!r}, but this network has one style "
                                        "(a style row needs a multi-style network, e.g. multistyle26)")
                row = integer_arg(style_row, "style_row", 0)
                if row >= spec.num_styles:
                    raise ArgumentError(f"style_row: got {row}; this network has styles 0..{spec.num_styles - 1}")
                self.net.set_style(np.eye(spec.num_styles)[row])
                self._train_only = {"style_row": row}
            return
        if train_only != "style_row":
            raise ArgumentError(f"train_only: got {train_only!r}; allowed None or 'style_row'")
        spec = self.preset.transformer
        if not spec.conditional:
            raise ArgumentError("train_only='style_row' needs a multi-style network (conditional instance norm)")
        row = spec.num_styles - 1 if style_row is None else integer_arg(style_row, "style_row", 0)
        if row >= spec.num_styles:
            raise ArgumentError(f"style_row: got {row}; this network has styles 0..{spec.num_styles - 1}")
        if self.preset.training.adam.weight_decay:
            raise ArgumentError("train_only='style_row' needs Adam without weight decay (it would move the frozen rows)")
        self.net.set_style(np.eye(spec.num_styles)[row])
        self._train_filter = lambda name: name.endswith((".norm.weight", ".norm.bias"))
        self._train_only = {"train_only": "style_row", "style_row": row}

    def _is_trainable(self, name: str) -> bool:
        """Whether the canonical parameter ``name`` is trained by the current ``fit`` (the
        backends' training sessions give the optimizer these only)."""
        f = getattr(self, "_train_filter", None)
        return f is None or bool(f(name))

    def _fit(self, images, style, *, steps=None, epochs=None, batch_size=None, image_size=None,
             checkpoint_dir=None, checkpoint_every=None, resume=False, seed=None, num_workers=None,
             progress=False, callback=None, lr=None, style_weights=None, **options) -> Dict[str, Any]:
        plan = self._plan(images, steps, epochs, batch_size, image_size, seed, num_workers, lr, checkpoint_dir,
                          checkpoint_every)
        tc = self.preset.training
        ckdir = plan.checkpoint_dir
        styles, blend = self._fit_styles(plan, style, style_weights)
        self._run_identity = None
        self._last_checkpoint: Optional[Path] = None
        found = None
        if ckdir is not None:
            # Every process computes the same identity and reads the same checkpoint (a shared folder).
            self._run_identity = self._identity(plan, styles, blend)
            found = self._checkpoint_to_resume(ckdir, resume)
        with self._training_session(plan, **options) as session:
            start = 0
            if not resume:
                self.history, self.skipped, self.skipped_count = [], [], 0
            elif found is not None:
                start = self._restore(found, plan, session)
                self._last_checkpoint = found[0]
            session.start(self._blend_style_grams(styles, blend, tc.style_size), start)
            total = plan.total_steps
            pending: List[Tuple[int, Any]] = []
            last_ck = start
            seen = 0
            stopped = False
            # Whether any step of this run (resumed ones included) had a readable image, and the
            # items found unreadable: a run on no readable image at all is an error, not a model.
            trained = any(isinstance(h, dict) and "total" in h for h in self.history)
            unreadable: set = set()
            self.step = start
            t0 = time.perf_counter()

            def flush() -> None:
                nonlocal seen
                outcomes = session.resolve([h for _, h in pending])
                steps_done = [s for s, _ in pending]
                pending.clear()
                nonlocal trained
                for done, out in zip(steps_done, outcomes):
                    names = plan.item_names(done - 1, out.bad_slots)
                    self.skipped_count += len(names)
                    self.skipped.extend(n for n in names if n not in self.skipped)
                    seen += out.images
                    if out.terms is None:
                        self.history.append({"step": done, "skipped_batch": True})
                        idx = plan.schedule.batch(done - 1)
                        unreadable.update(idx[j] for j in out.bad_slots if j < len(idx))
                        if not trained and (len(unreadable) >= plan.schedule.n
                                            or done - start >= plan.schedule.steps_per_epoch):
                            raise no_readable_image(done)
                        continue
                    trained = True
                    if not np.isfinite(out.terms[0]):
                        raise TrainingError(nonfinite_message(float(out.terms[0]), done))
                    # a fifth term is the temporal loss (resty.temporal), when the preset weights it
                    self.history.append({"step": done, **dict(zip(LOSS_TERMS + ("temporal",), map(float, out.terms)))})

            def last_terms() -> Dict[str, float]:
                last = self.history[-1] if self.history else {}
                return {k: last[k] for k in LOSS_TERMS if k in last}

            def no_readable_image(done: int) -> ImageError:
                return ImageError(f"{plan.source}: no readable training image in {done - start} step(s) "
                                  f"({len(unreadable)} of {plan.schedule.n} image(s) skipped as unreadable: "
                                  f"corrupt, truncated or not images); no model was trained")

            def checkpoint(step: int) -> None:
                if not trained:
                    return                      # nothing trained yet: the initial weights need no checkpoint
                failed: Optional[RestyError] = None
                if session.dist.is_main:
                    try:
                        self._save_checkpoint(plan, step, session)
                    except RestyError as exc:   # a full disk: one line naming the file
                        failed = exc
                # A collective, so also the barrier: nobody reads a checkpoint before it is complete.
                if session.dist.any(failed is not None):
                    raise failed or RestyError(f"{ckdir}: the main process could not write the checkpoint "
                                               f"of step {step}")

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
                if not trained and self.step > start:
                    raise no_readable_image(self.step)
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
                "checkpoint": str(self._last_checkpoint) if ckdir and self._last_checkpoint else None}

    # ------------------------------------------------------------------ checkpoints
    def _identity(self, plan: TrainingPlan, styles, blend) -> Dict[str, Any]:
        """This run's identity (resty.run_identity): what a checkpoint must share to be resumed."""
        p = self.preset
        key = (self.weights if isinstance(self.weights, str) else id(self.weights), p.vgg.arch, p.preprocessing_name)
        cached = getattr(self, "_loss_network_id", None)
        if cached is None or cached[0] != key:
            cached = (key, loss_network_identity(self.weights, p.vgg.arch, p.preprocessing_name))
            self._loss_network_id = cached
        settings = plan.identity_settings(p.training.style_size)
        if getattr(self, "_train_only", None):
            settings.update(self._train_only)      # only then: older identities stay the same
        return {"version": IDENTITY_VERSION, "preset": preset_identity(p.to_dict()),
                "style": plan.style_data if plan.styles is not None else style_identity(styles, blend),
                "loss_network": dict(cached[1]), "data": plan.data, "settings": settings}

    def _checkpoint_to_resume(self, ckdir: str, resume: bool):
        """``(path, tensors, meta)`` of the checkpoint to resume from (None: start at step 0).
        A new run refuses a folder that holds checkpoints (its own old ones would be pruned as
        older than another run's, and a later resume would pick up the other run); a resumed
        run refuses another run's checkpoint, and skips unreadable newest ones with a warning."""
        found = list_checkpoints(ckdir)
        if not found:
            return None
        newest = found[-1][1]
        if not resume:
            if checkpoint_run_id(newest) == run_id(self._run_identity):
                raise RestyError(f"{ckdir}: already holds this run's checkpoints (up to {newest.name}); continue "
                                 "them with resume=True, or start over in another checkpoint_dir")
            raise RestyError(f"{ckdir}: holds checkpoints of another training run (newest {newest.name}); give this "
                             "run another checkpoint_dir, or continue that run with its own inputs and resume=True")
        bad: List[Path] = []
        for _, path in reversed(found):
            try:
                tensors, meta = load_checkpoint(path)
            except RestyError as exc:
                bad.append(path)
                warnings.warn(f"{one_line(exc)}; trying the checkpoint before it", RuntimeWarning, stacklevel=3)
                continue
            problem = None
            if "identity" in meta and not isinstance(meta["identity"], dict):
                problem = f"its identity is a {type(meta['identity']).__name__}"
            else:
                self._check_identity(path, meta)
                problem = self._checkpoint_problem(tensors, meta)
            if problem:
                bad.append(path)
                warnings.warn(f"{path}: cannot read checkpoint ({problem}); trying the checkpoint before it",
                              RuntimeWarning, stacklevel=3)
                continue
            return path, tensors, meta
        raise RestyError(f"{ckdir}: cannot resume: none of its {len(bad)} checkpoint(s) can be read (newest "
                         f"{bad[0].name}); start a new run in another checkpoint_dir")

    def _check_identity(self, path: Path, meta: Mapping[str, Any]) -> None:
        new = self._run_identity
        old = meta.get("identity")
        if isinstance(old, dict):
            diffs = identity_differences(old, new)
        else:   # written before run identities: its preset and the settings it recorded
            saved = meta.get("preset")
            legacy = {"preset": preset_identity(saved) if isinstance(saved, dict) else new["preset"],
                      "style": new["style"], "loss_network": new["loss_network"], "data": new["data"],
                      "settings": meta.get("settings") if isinstance(meta.get("settings"), dict) else {}}
            now = dict(new, settings={k: v for k, v in dict(new["settings"], n_items=new["data"]["n_items"]).items()
                                      if k != "style_size"})
            diffs = identity_differences(legacy, now)
            if not diffs:
                warnings.warn(f"{path}: written by an older Resty without a run identity: only its preset and "
                              "settings could be checked", RuntimeWarning, stacklevel=4)
        if diffs:
            raise RestyError(f"{path}: cannot resume: the checkpoint was made with {' and '.join(diffs)}; resume "
                             "with the same inputs and settings, or start a new run in another checkpoint_dir")

    def _checkpoint_problem(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Optional[str]:
        """Why a checkpoint of this run cannot be restored (missing or misshapen tensors, broken
        metadata), or None."""
        want = {k: tuple(np.shape(v)) for k, v in self.net.state_dict_canonical().items()}
        got = {k[4:]: tuple(np.shape(v)) for k, v in tensors.items() if k.startswith("net.")}
        for k, shape in want.items():
            if got.get(k) != shape:
                return f"net.{k} is {'missing' if k not in got else f'of shape {got[k]}, not {shape}'}"
        try:
            _, m, v = adam_state_from_tensors(tensors)
        except (ValueError, TypeError, IndexError) as exc:
            return f"opt.step: {one_line(exc)}"
        for k in set(m) | set(v):
            if k not in want or tuple(np.shape(m.get(k))) != want[k] or tuple(np.shape(v.get(k))) != want[k]:
                return f"the optimizer state of {k} does not match the network"
        kinds = {"history": list, "skipped": list, "skipped_count": int, "rng": dict}
        for k, kind in kinds.items():
            if k in meta and not isinstance(meta[k], kind):
                return f"its {k} is a {type(meta[k]).__name__}"
        return None

    def _save_checkpoint(self, plan: TrainingPlan, step: int, session: TrainingSession) -> Path:
        epoch, pos = plan.schedule.epoch_position(step)
        tensors = {f"net.{k}": v for k, v in self.net.state_dict_canonical().items()}
        tensors.update(adam_state_to_tensors(*session.optimizer_state()))
        identity = getattr(self, "_run_identity", None)
        meta = {"step": step, "epoch": epoch, "position": pos, "total_steps": plan.total_steps,
                "settings": plan.settings, "rng": session.rng_state(), "history": self.history,
                "skipped": self.skipped, "skipped_count": self.skipped_count, "preset": self.preset.to_dict(),
                "backend": self.backend_name, "dtype": self._dtype_name(), "identity": identity}
        path = save_checkpoint(plan.checkpoint_dir, step, tensors, meta, keep=self.preset.training.keep_checkpoints,
                               run_id=run_id(identity) if identity else None)
        self._last_checkpoint = path
        return path

    def _restore(self, found, plan: TrainingPlan, session: TrainingSession) -> int:
        """Load a checkpoint chosen (and checked) by :meth:`_checkpoint_to_resume`."""
        path, tensors, meta = found
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

    def _min_side(self) -> int:
        """The smallest image side the network takes (its first convolution's reflection pad)."""
        return self.preset.transformer.kernel_in // 2 + 1

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """The network on a B×H×W×3 batch -> B×H×W×3 in [0, 1]."""
        h, w = batch.shape[1:3]
        if min(h, w) < self._min_side():
            raise ImageError(f"<image>: {h}×{w} px is too small for this network (sides must be >= "
                             f"{self._min_side()} px)")
        if self._cpu_fast is not None and self._fast_path_allowed():
            y = self._cpu_fast.run(np.asarray(batch, np.float32).transpose(0, 3, 1, 2), self._weights_key(),
                                   self._canonical_weightset,
                                   self.net.get_style() if self.preset.transformer.conditional else None)
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

    def stylize(self, images, *, preserve_color=False, tile=None, overlap=32, batch_size=None, style=None):
        """Stylise one image (-> H×W×3 float32) or several (a list or a B×H×W×3 array -> a
        list, or an array for an array).  Each output has its input's size.  ``tile`` (px)
        runs large images in overlapping tiles blended with linear ramps (instance norm then
        sees per-tile statistics; a larger ``overlap`` hides the seams better).
        ``style`` (networks with a conditional norm, e.g. ``load("multistyle26")``): an index
        (``19``), a blend ``{3: 0.5, 12: 0.5}`` or ``"3:0.5,12:0.5"``, or a weight vector
        (resty.inputs.style_vector; normalised to sum 1) for this call; None: style 0."""
        self._eval_mode()
        spec = self.preset.transformer
        if style is not None and not spec.conditional:
            raise ArgumentError("style: this model has one style (no conditional norm); "
                                "style= is for multi-style models such as multistyle26")
        if spec.conditional:
            self.net.set_style(style_vector(0 if style is None else style, spec.num_styles))
        return stylize_images(images, self._run, preserve_color=preserve_color, tile=tile, overlap=overlap,
                              batch_size=batch_size)

    # ------------------------------------------------------------------ files
    #: The weight file's architecture and the spec saved in it (AdaIN saves its decoder).
    _file_architecture = "transformer"

    def _file_spec(self):
        return self.preset.transformer

    def _file_extra(self) -> Dict[str, Any]:
        return {}

    def save(self, path, *, overwrite=False) -> Path:
        """The canonical safetensors file (resty.weights) with the network's spec and the preset
        in its metadata: loadable by either backend.  In a distributed run only the main
        process writes (the others return the path)."""
        if not self._writes_files():
            return Path(os.fspath(path))
        tensors = {k: v if v.dtype == np.float64 else np.asarray(v, np.float32)
                   for k, v in self.net.state_dict_canonical().items()}
        ws = WeightSet(tensors, self._file_architecture, source=f"{type(self).__module__.split('.')[0]} "
                       f"{type(self).__name__} ({self.preset.name})", spec=self._file_spec(),
                       extra={"preset": self.preset.to_dict(), "steps": int(self.step),
                              "skipped_count": int(self.skipped_count), **self._file_extra()})
        return save_weights(path, ws, overwrite=overwrite)

    @classmethod
    def load(cls, path, *, weights="imagenet", device=None, dtype="float32", new_style=False,
             **kw) -> "FastStylizerBase":
        """A stylizer from a file written by :meth:`save` (either backend), or a model name
        (``"multistyle26"``: imported with ``resty models import`` or bundled by an installed
        package, see resty.models).  ``new_style=True`` (a multi-style network): one more style
        row, initialised by resty.models.add_style, to train with ``fit(...,
        train_only="style_row")``."""
        from .models import add_style, resolve_model
        where = resolve_model(path)
        ws = where if isinstance(where, WeightSet) else load_weights(where, expect="transformer")
        if new_style:
            ws = add_style(ws)
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
