"""``fit``: a trained flow guide and its diagnostics in one call, with the measured recipe."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import PyroLRScheduler

from pyro_flowvi.autoguide.compiled import CaptureError, CompiledSVI
from pyro_flowvi.autoguide.flow_guide import AutoFlowGuide
from pyro_flowvi.autoguide.objectives import MassCoveringELBO
from pyro_flowvi.autoguide.potential import UnconstrainedLogDensity
from pyro_flowvi.autoguide.training import fit_svi
from pyro_flowvi.diagnostics import DiagnosticReport
from pyro_flowvi.importance import importance_log_weights

__all__ = ["FIT_BASE_DF", "KHAT_WARNING", "CheckpointMismatchError", "FitResult", "Recipe",
           "RecipeSchedule", "fit"]

KHAT_WARNING = 0.7
"""``fit`` warns when the fitted guide's PSIS k-hat exceeds this (Yao et al. 2018)."""
FIT_BASE_DF = 15.0
"""``fit``'s guides sample a Student-t(15) base (unit variance) unless ``guide_options`` say
otherwise: Gaussian-tailed guides leave PSIS k-hat above 0.7 on near-Gaussian and skewed real
posteriors (the logit of a simplex, a regression's scale); see ``BENCHMARKS.md``."""
_FIT_COUNT = itertools.count()
COMPILE_MODES = ("auto", "off", "graph", "script", "inductor")
AUTO_BACKEND = "script"
"""The captured step's backend under ``Recipe(compile="auto")`` (see ``BENCHMARKS.md``)."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The training recipe of :func:`fit` (defaults chosen on the posteriordb benchmark, see
    ``BENCHMARKS.md``).

    Adam at ``lr`` (on the guide's whitened parameters) with gradient norm clipping, until the
    loss plateaus (:class:`RecipeSchedule`), then a geometric decay of the rate by
    ``decay_factor`` over ``decay_fraction`` of the steps taken so far (at least
    ``min_decay_steps``), then stop; ``max_steps`` and ``max_seconds`` cap the whole run.

    ``compile`` chooses the step: ``"off"`` is Pyro's ``Trace_ELBO`` (vectorised particles
    where the model broadcasts), the others the captured step
    (:class:`~pyro_flowvi.autoguide.compiled.CompiledSVI`, the same estimator and update)
    with that backend (:data:`~pyro_flowvi.autoguide.compiled.BACKENDS`); ``"auto"`` is
    :data:`AUTO_BACKEND`, falling back to ``Trace_ELBO`` with a warning that says why when the
    model cannot be captured (or silently for ``objective="mass_covering"``, which has no
    captured step).
    """

    lr: float = 1e-2
    clip_norm: float = 10.0
    num_particles: int = 8
    window: int = 200
    min_steps: int = 600
    max_steps: int = 10000
    max_seconds: float | None = None
    tolerance: float = 0.05
    decay_factor: float = 0.05
    decay_fraction: float = 0.3
    min_decay_steps: int = 500
    objective: str = "elbo"
    compile: str = "auto"

    def __post_init__(self) -> None:
        for name in ("lr", "clip_norm", "decay_factor", "decay_fraction", "tolerance"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"fit: {name} must be a positive number, got {value!r}")
        for name in ("num_particles", "window", "min_steps", "max_steps", "min_decay_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"fit: {name} must be a positive integer, got {value!r}")
        if self.objective not in ("elbo", "mass_covering"):
            raise ValueError(f"fit: objective must be 'elbo' or 'mass_covering', got "
                             f"{self.objective!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"fit: compile must be one of {COMPILE_MODES}, got "
                             f"{self.compile!r}")


class RecipeSchedule:
    """Learning-rate factor and stopping rule of :class:`Recipe`, driven by the loss trace.

    Phase 1 keeps the rate until the mean loss of the last ``window`` steps improves on the
    window before by less than ``max(tolerance, 2 s.e.)`` nats (and ``min_steps`` have run); phase
    2 decays it geometrically to ``decay_factor`` over ``max(min_decay_steps, decay_fraction *
    steps so far)`` steps, after which :meth:`__call__` says stop.  Phase 1 ends at the latest
    when ``max_steps`` minus the decay length is reached.

    Example:
        >>> schedule = RecipeSchedule(Recipe(window=10, min_steps=20, min_decay_steps=10))
        >>> schedule([5.0] * 40), schedule.decay_start, round(schedule.factor(45), 3)
        (False, 40, 0.287)
    """

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.decay_start: int | None = None
        self.decay_steps = recipe.min_decay_steps
        self.converged = False

    def factor(self, step: int) -> float:
        """Multiplier of the base rate at ``step``."""
        if self.decay_start is None or step < self.decay_start:
            return 1.0
        frac = min(1.0, (step - self.decay_start) / self.decay_steps)
        return self.recipe.decay_factor ** frac

    def _start_decay(self, step: int) -> None:
        r = self.recipe
        self.decay_start = step
        self.decay_steps = max(r.min_decay_steps, int(r.decay_fraction * step))

    def __call__(self, losses: list[float]) -> bool:
        """Update the phase from ``losses``; ``True`` when the run should stop."""
        r, step = self.recipe, len(losses)
        if self.decay_start is not None:
            return step >= self.decay_start + self.decay_steps
        if step >= r.max_steps - max(r.min_decay_steps, int(r.decay_fraction * r.max_steps)):
            self._start_decay(step)
            self.decay_steps = r.max_steps - step  # end the decay at the cap
        elif step >= max(r.min_steps, 2 * r.window) and self.plateaued(losses):
            self.converged = True
            self._start_decay(step)
        return False

    def plateaued(self, losses: list[float]) -> bool:
        """Whether the last window's mean loss improved on the one before by under the
        tolerance (or under twice its standard error)."""
        w = self.recipe.window
        last, prev = np.asarray(losses[-w:]), np.asarray(losses[-2 * w:-w])
        se = math.sqrt((last.var() + prev.var()) / w)
        return float(prev.mean() - last.mean()) < max(self.recipe.tolerance, 2 * se)


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        guide: the trained :class:`~pyro_flowvi.AutoFlowGuide` (use it with ``Predictive``,
            ``median()``, ``quantiles()``).
        losses: the loss (-ELBO estimate) of every step.
        report: :class:`~pyro_flowvi.diagnostics.DiagnosticReport` of the final guide (ELBO
            +- s.e., PSIS k-hat, ESS, entropy check).
        converged: whether the loss plateaued before the step/time cap.
        num_steps, seconds: steps taken and wall time of training (warm start included).
        recipe: the :class:`Recipe` used; ``warm_start``: how the guide started
            (:attr:`AutoFlowGuide.warm_start_record`).
    """

    guide: AutoFlowGuide
    losses: list[float]
    report: DiagnosticReport
    converged: bool
    num_steps: int
    seconds: float
    recipe: Recipe
    warm_start: dict[str, Any]
    args: tuple = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_inference_data(self, num_samples: int = 4000) -> Any:
        """Guide draws (and their importance log-weights) as ``arviz.InferenceData``."""
        return self.guide.to_inference_data(*self.args, num_samples=num_samples, **self.kwargs)

    @torch.no_grad()
    def resample(self, num_samples: int = 1000, num_proposals: int = 8000
                 ) -> dict[str, torch.Tensor]:
        """PSIS importance-resampled posterior draws: ``num_proposals`` guide draws, weighted by
        their Pareto-smoothed importance weights and resampled (with replacement) to
        ``num_samples``.  Closer to the posterior than the guide's own draws when k-hat is
        below ~0.7; beyond that the weights are unreliable too."""
        import arviz

        log_w, samples = importance_log_weights(self.guide.model, self.guide, *self.args,
                                                num_samples=num_proposals, batch_size=1000,
                                                **self.kwargs)
        smoothed, _ = arviz.psislw(log_w.double().cpu().numpy().copy(), reff=1.0)
        probs = torch.as_tensor(np.exp(smoothed - smoothed.max()))
        index = torch.multinomial(probs / probs.sum(), num_samples, replacement=True)
        return {name: value[index.to(value.device)] for name, value in samples.items()}


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a fit of another configuration."""


_SCHEDULE_STATE = ("decay_start", "decay_steps", "converged")


def _save_every(path: Path, every: int, settings: dict[str, Any], guide: AutoFlowGuide,
                optim: Any, schedule: RecipeSchedule, losses: list[float]) -> None:
    if len(losses) % every:
        return
    state = {
        "settings": settings, "losses": list(losses), "rng": pyro.util.get_rng_state(),
        "params": pyro.get_param_store().get_state(), "optim": optim.get_state(),
        "buffers": {k: v.detach().clone() for k, v in guide.named_buffers()},
        "schedule": {k: getattr(schedule, k) for k in _SCHEDULE_STATE},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill leaves the old checkpoint or the new one


def _resume(path: Path, settings: dict[str, Any], guide: AutoFlowGuide, optim: Any,
            schedule: RecipeSchedule) -> list[float]:
    """Load ``path`` (if it exists) into the set-up guide, the optimiser, the schedule and the
    random state; return the losses so far."""
    if not path.exists():
        return []
    state = torch.load(path, weights_only=False)
    differ = {k: (state["settings"].get(k), v) for k, v in settings.items()
              if state["settings"].get(k) != v}
    if differ:
        raise CheckpointMismatchError(
            f"fit: the checkpoint {str(path)!r} was written by another configuration; settings "
            "that differ (checkpoint vs now): " + "; ".join(
                f"{k}: {a!r} vs {b!r}" for k, (a, b) in differ.items())
            + ". Use another checkpoint path, or delete this one to start afresh.")
    with torch.no_grad():
        buffers = dict(guide.named_buffers())
        for name, value in state["buffers"].items():
            buffers[name].copy_(value)
    pyro.get_param_store().set_state(state["params"])
    optim.set_state(state["optim"])
    for key, value in state["schedule"].items():
        setattr(schedule, key, value)
    pyro.util.set_rng_state(state["rng"])
    return list(state["losses"])


def _make_loss(model: Callable, guide: AutoFlowGuide, recipe: Recipe, args: tuple,
               kwargs: dict) -> Any:
    """The recipe's objective, vectorised over particles where the model allows it."""
    nesting = UnconstrainedLogDensity(guide, args, kwargs).max_plate_nesting
    if recipe.objective == "mass_covering":
        return MassCoveringELBO(num_particles=recipe.num_particles, max_plate_nesting=nesting)
    vectorized = Trace_ELBO(num_particles=recipe.num_particles, vectorize_particles=True,
                            max_plate_nesting=nesting)
    if recipe.num_particles == 1:
        return vectorized
    state = pyro.util.get_rng_state()
    try:
        with torch.no_grad():
            vectorized.loss(model, guide, *args, **kwargs)
    except (RuntimeError, ValueError, IndexError) as err:
        warnings.warn(f"fit: the model does not run with vectorised particles ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); training with one "
                      "particle per step instead. Write the model so that it broadcasts over "
                      "leading batch dims for lower-variance steps.", stacklevel=3)
        return Trace_ELBO(num_particles=1, max_plate_nesting=nesting)
    finally:
        pyro.util.set_rng_state(state)
    return vectorized


def _compiled_step(guide: AutoFlowGuide, recipe: Recipe, schedule: RecipeSchedule,
                   args: tuple, kwargs: dict) -> CompiledSVI | None:
    """The captured step of the recipe, or ``None`` for Pyro's ``Trace_ELBO`` (with a warning
    naming the reason when the model cannot be captured)."""
    if recipe.compile == "off" or recipe.objective != "elbo":
        if recipe.compile not in ("off", "auto"):
            warnings.warn(f"fit: objective={recipe.objective!r} has no captured step; training "
                          "with the eager objective", stacklevel=3)
        return None
    backend = AUTO_BACKEND if recipe.compile == "auto" else recipe.compile
    svi = CompiledSVI(guide, num_particles=recipe.num_particles, lr=recipe.lr,
                      lr_factor=schedule.factor, clip_norm=recipe.clip_norm, backend=backend)
    try:
        svi.capture(*args, **kwargs)
    except CaptureError as err:
        warnings.warn(f"fit: the training step cannot be captured ({err}); training with Pyro's "
                      "Trace_ELBO instead (the same estimator, slower per step)", stacklevel=3)
        return None
    return svi


def fit(
    model: Callable, *args: Any, arch: str = "iaf", guide_options: dict[str, Any] | None = None,
    recipe: Recipe | None = None, seed: int | None = None, progress: bool = True,
    num_diagnostic_samples: int = 4000, checkpoint: str | Path | None = None,
    checkpoint_every: int = 200, **kwargs: Any,
) -> FitResult:
    """Fit a normalizing-flow guide to ``model(*args, **kwargs)`` with the measured recipe.

    The guide is :class:`~pyro_flowvi.AutoFlowGuide` with its defaults (a Laplace warm start
    where it succeeds and scores best, a full-rank affine base at small ``D``), a Student-t
    base (:data:`FIT_BASE_DF`) and ``guide_options``; it is trained by :class:`Recipe` (Adam
    with clipping, ``num_particles`` vectorised draws per step, the rate decayed once the loss
    plateaus, then stop), and
    diagnosed on ``num_diagnostic_samples`` importance samples.  A PSIS k-hat above
    :data:`KHAT_WARNING` gives a warning that names what to try.  Observations outside their
    likelihood's support are refused before training; a diverging fit stops with the cause
    named and the last finite parameters kept.

    Each call trains a new guide under its own name (``fit0.``, ``fit1.``, ... in the param
    store), so results of earlier calls stay usable.

    Args:
        model: a Pyro model with continuous latents; ``*args, **kwargs`` are its data.
        arch: the flow architecture (see :func:`~pyro_flowvi.available_archs`).
        guide_options: further :class:`~pyro_flowvi.AutoFlowGuide` options (``num_layers``,
            ``hidden_dims``, ``base``, ``warm_start``, ...).
        recipe: training settings (default :class:`Recipe()`); e.g. ``Recipe(max_steps=2000,
            max_seconds=60)``.
        seed: seeds Pyro's, torch's and numpy's generators first when given.
        progress: show a progress bar.
        checkpoint: a file to save the training state to every ``checkpoint_every`` steps
            (written to a temporary file, then renamed: a kill never leaves it half-written).
            If it exists when ``fit`` starts, training resumes from it and ends with the
            parameters the uninterrupted run would have had; a checkpoint of another
            configuration is refused, naming the settings that differ.

    Example:
        >>> import pyro.distributions as dist
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> result = fit(model, torch.tensor([0.9, 1.1, 1.3]), seed=0, progress=False,
        ...              recipe=Recipe(max_steps=800, min_decay_steps=200))
        >>> round(float(result.guide.median()["mu"]), 1)  # exact posterior mean 1.1
        1.1
        >>> result.report.psis_khat < 0.7
        True
    """
    recipe = Recipe() if recipe is None else recipe
    if seed is not None:
        pyro.set_rng_seed(seed)
    start = time.perf_counter()
    options = dict(guide_options or {})
    options.setdefault("name", f"fit{next(_FIT_COUNT)}")
    options.setdefault("base_df", FIT_BASE_DF)
    guide = AutoFlowGuide(model, arch, **options)
    with torch.no_grad():
        guide(*args, **kwargs)  # set up: warm start, flow
    schedule = RecipeSchedule(recipe)
    svi: Any = _compiled_step(guide, recipe, schedule, args, kwargs)
    optim: Any = svi
    scheduler = None
    if svi is None:
        optim = scheduler = PyroLRScheduler(torch.optim.lr_scheduler.LambdaLR, {
            "optimizer": torch.optim.Adam, "optim_args": {"lr": recipe.lr},
            "lr_lambda": lambda step: schedule.factor(step)},
            clip_args={"clip_norm": recipe.clip_norm})
        svi = SVI(model, guide, optim, _make_loss(model, guide, recipe, args, kwargs))
    settings = {"arch": arch, "guide_options": repr(sorted(options.items())),
                "recipe": repr(recipe), "latent_dim": guide.latent_dim, "seed": seed,
                "step": type(svi).__name__}
    history: list[float] = []
    on_step = None
    if checkpoint is not None:
        history = _resume(Path(checkpoint), settings, guide, optim, schedule)
        if history and isinstance(svi, CompiledSVI):
            svi.capture(*args, **kwargs)  # the loaded buffers are the graph's constants
        on_step = partial(_save_every, Path(checkpoint), checkpoint_every, settings, guide,
                          optim, schedule)
    done = len(history)
    stopped = done > 0 and schedule(history)
    counts: dict[str, int] = {}
    losses = history if stopped else fit_svi(
        svi, *args, num_steps=recipe.max_steps - done, progress=progress, scheduler=scheduler,
        stop=schedule, check_every=1, max_seconds=recipe.max_seconds, history=history,
        on_step=on_step, counts=counts, **kwargs)
    if counts.get("skipped"):
        warnings.warn(f"fit: {counts['skipped']} of {counts['skipped'] + len(losses) - done} "
                      "steps were skipped: their loss or gradient was not finite (a draw in the "
                      "tails overflowed the model's density); the parameters did not move on "
                      "them.", stacklevel=2)
    seconds = time.perf_counter() - start
    report = guide.diagnose(*args, num_samples=num_diagnostic_samples, **kwargs)
    if math.isinf(report.psis_khat) and report.psis_khat > 0:
        warnings.warn(f"fit: PSIS k-hat could not be estimated from {report.num_samples} draws; "
                      "raise num_diagnostic_samples (4000 is the default)", stacklevel=2)
    elif report.psis_khat > KHAT_WARNING:
        warnings.warn(
            f"fit: PSIS k-hat {report.psis_khat:.2f} > {KHAT_WARNING}: the guide misses "
            "posterior mass in the tails and its expectations may be off. Try "
            "recipe=Recipe(objective='mass_covering') (trains on the forward KL too), another "
            "arch (e.g. 'realnvp') or more layers, or use result.resample() for "
            "importance-resampled draws.", stacklevel=2)
    return FitResult(guide, losses, report, schedule.converged, len(losses), seconds, recipe,
                     dict(guide.warm_start_record), args, kwargs)
