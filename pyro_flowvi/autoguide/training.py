"""The one SVI loop: progress bar, optional scheduler and stopping rule, and a clear error that
keeps the last good parameters when the loss goes non-finite."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.util import zero_grads
from pyro.util import get_rng_state, set_rng_state
from tqdm.auto import tqdm

from pyro_flowvi.initialization import init_to_feasible_point

__all__ = ["NonFiniteLossError", "check_observations", "find_nonfinite", "fit_svi"]


class NonFiniteLossError(ValueError):
    """The loss or its gradient stayed NaN or infinite; the message names the sites/parameters
    responsible.

    ``step`` counts the completed (finite) steps before the failure; the param store holds the
    parameters after the last of them (``restored``: there was one)."""

    def __init__(self, message: str, step: int = -1, restored: bool = False) -> None:
        super().__init__(message)
        self.step, self.restored = step, restored


def _nonfinite_parameters(guide: Callable) -> list[str]:
    """Name each non-finite parameter of the param store; a packed flow parameter is broken down
    into the layer views that hold the bad values (``flow_parameters()``)."""
    views: dict[str, dict[str, torch.Tensor]] = {}
    for module in guide.modules() if isinstance(guide, torch.nn.Module) else ():
        named = getattr(module, "flow_parameters", None)
        if callable(named) and "_flow_layout" in module.__dict__:
            full = module._pyro_get_fullname("flow_packed")
            views[full] = named()
    problems = []
    for name, value in pyro.get_param_store().items():
        if torch.isfinite(value).all():
            continue
        if name in views:
            bad = [view for view, v in views[name].items() if not torch.isfinite(v).all()]
            shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
            problems.append(f"parameter {name!r} (flow layers: {shown})")
        else:
            problems.append(f"parameter {name!r}")
    return problems


def find_nonfinite(model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> list[str]:
    """Name every parameter, guide value or log-density that is NaN or infinite.

    Checks the parameter store (a packed flow parameter by its layer views), then runs the guide
    once with validation off, replays the model against it, and checks each sample site's value
    and ``log_prob``.
    """
    problems = _nonfinite_parameters(guide)
    with torch.no_grad(), pyro.validation_enabled(False):
        try:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a diagnosis must not hide the real failure
            return [*problems, f"running guide and model failed: {type(err).__name__}: {err}"]
        for role, trace in (("guide", guide_trace), ("model", model_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if not torch.isfinite(torch.as_tensor(site["value"])).all():
                    problems.append(f"{role} site {name!r} has non-finite values")
                    continue
                lp = site["fn"].log_prob(site["value"])
                if not torch.isfinite(lp).all():
                    problems.append(f"{role} site {name!r} has non-finite log_prob")
    return problems


def check_observations(model: Callable, *args: Any, **kwargs: Any) -> None:
    """Raise a ``ValueError`` naming every observed site whose data lies outside its
    likelihood's support, or is NaN.

    With Pyro's validation off, torch scores such data finitely (e.g. ``y < 0`` under a
    ``LogNormal`` likelihood), so a fit would run silently on a wrong density.  The model runs
    once with its latents at a feasible point (no sampling; the random state is restored).

    Example:
        >>> import pyro.distributions as dist
        >>> def model(y):
        ...     s = pyro.sample("s", dist.HalfNormal(1.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Exponential(s), obs=y)
        >>> check_observations(model, torch.tensor([0.5, -1.0]))
        Traceback (most recent call last):
        ...
        ValueError: observed site 'y': 1 of 2 values lie outside the support ...
    """
    state = get_rng_state()
    try:
        with poutine.block(), torch.no_grad(), pyro.validation_enabled(False):
            trace = poutine.trace(InitMessenger(init_to_feasible_point)(model)).get_trace(
                *args, **kwargs)
    finally:
        set_rng_state(state)
    problems = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or site["infer"].get(
                "_do_not_score") or type(site["fn"]).__name__ == "_Subsample":
            continue
        value = torch.as_tensor(site["value"])
        try:
            ok = site["fn"].support.check(value)
        except NotImplementedError:  # a support without a check (e.g. a user distribution)
            continue
        if bool(torch.as_tensor(ok).all()):  # also a factor's empty "observation"
            continue
        bad = (~ok).nonzero()
        first = tuple(int(i) for i in bad[0]) if bad.numel() else ()
        shown = value[first] if first else value
        problems.append(
            f"observed site {name!r}: {int((~ok).sum())} of {ok.numel()} values lie outside the "
            f"support {site['fn'].support} of its {type(site['fn']).__name__} likelihood (first "
            f"at index {list(first)}: {shown.tolist()})")
    if problems:
        raise ValueError("; ".join(problems) + ". The likelihood of such data is zero (with "
                         "validation off torch still scores it finitely): fix the data or "
                         "choose a likelihood whose support contains it.")


def _is_validation_error(err: ValueError) -> bool:
    """Pyro/torch argument validation refusing NaN or out-of-support parameters."""
    text = str(err)
    return "Expected parameter" in text or "found invalid values" in text \
        or "Expected value argument" in text


def guarded_step(svi: Any, *args: Any, **kwargs: Any) -> float:
    """One step of ``svi`` that updates the parameters only when the loss and every gradient
    are finite; returns the loss, or NaN when the step was skipped (a non-finite loss or
    gradient, or argument validation refusing a draw).

    ``SVI.step`` would apply a NaN or infinite gradient (an overflow on one draw in the tails)
    and leave NaN parameters.  This is ``SVI.step`` with that check between the gradients and
    the optimiser (one host synchronisation per step, which ``SVI.step``'s float loss has
    anyway).  Steppers that are not a :class:`pyro.infer.SVI` (e.g.
    :class:`~pyro_flowvi.autoguide.compiled.CompiledSVI`, which makes the same check inside its
    graph) are called as ``svi.step(*args, **kwargs)``.
    """
    if not isinstance(svi, SVI):
        return svi.step(*args, **kwargs)
    with poutine.trace(param_only=True) as capture:
        try:
            loss = svi.loss_and_grads(svi.model, svi.guide, *args, **kwargs)
        except ValueError as err:
            if not _is_validation_error(err):
                raise
            loss = math.nan
    params = {site["value"].unconstrained() for site in capture.trace.nodes.values()}
    grads = [p.grad for p in params if p.grad is not None]
    finite = math.isfinite(loss) and (not grads or bool(torch.stack(
        [torch.isfinite(g).all() for g in grads]).all()))
    if finite:
        svi.optim(params)
    zero_grads(params)
    return loss if finite else math.nan


def fit_svi(
    svi: Any, *args: Any, num_steps: int = 1000, progress: bool = True,
    scheduler: Any = None, stop: Callable[[list[float]], bool] | None = None,
    check_every: int = 100, max_seconds: float | None = None, check_data: bool = True,
    history: list[float] | None = None, on_step: Callable[[list[float]], None] | None = None,
    max_skips: int = 20, counts: dict[str, int] | None = None, **kwargs: Any,
) -> list[float]:
    """Run up to ``num_steps`` SVI steps and return the losses.

    After each step the optional ``scheduler`` (a :class:`pyro.optim.PyroLRScheduler` used as
    ``svi``'s optimiser) is stepped; every ``check_every`` steps ``stop(losses)`` may end the run
    (e.g. :class:`~pyro_flowvi.autoguide.fit.RecipeSchedule`), as does ``max_seconds`` of wall
    time.  ``SVI.step`` returns a Python float, so the checks add no device synchronisation.

    Each step is :func:`guarded_step`: a step whose loss or gradient is not finite (one draw in
    the tails overflowing the model's density, or argument validation refusing it) changes
    nothing and is skipped; it is not in the losses, and ``counts["skipped"]`` (when a dict is
    given) counts it.  After ``max_skips`` skipped steps in a row (or when no step of the run
    was finite), :class:`NonFiniteLossError` names the cause (:func:`find_nonfinite`); the
    param store then holds the parameters of the last step whose loss was finite.  Before the
    first step, ``check_data`` runs :func:`check_observations` on the model.  ``history``
    continues an earlier run's losses (a resumed fit: ``stop`` sees all of them; ``num_steps``
    counts the new steps only), and ``on_step(losses)`` runs after every completed step (e.g.
    to write a checkpoint).

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.infer import Trace_ELBO
        >>> from pyro.optim import Adam
        >>> from pyro_flowvi import AutoFlowGuide
        >>> def model():
        ...     pyro.sample("x", dist.Normal(1.0, 2.0))
        >>> guide = AutoFlowGuide(model, num_layers=1, hidden_dims=[4])
        >>> losses = fit_svi(SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO()), num_steps=5,
        ...                  progress=False)
        >>> len(losses)
        5
    """
    if int(num_steps) != num_steps or num_steps < 0:
        raise ValueError(f"fit_svi: num_steps must be a non-negative integer, got {num_steps!r}")
    if not (isinstance(max_skips, int) and max_skips >= 1):
        raise ValueError(f"fit_svi: max_skips must be a positive integer, got {max_skips!r}")
    if check_data:
        check_observations(svi.model, *args, **kwargs)
    losses: list[float] = list(history or [])
    counts = {} if counts is None else counts
    counts.setdefault("skipped", 0)
    start = time.perf_counter()
    in_a_row = done = 0
    bar = tqdm(range(int(num_steps)), disable=not progress, desc="SVI", leave=False)
    for _ in bar:
        loss = guarded_step(svi, *args, **kwargs)
        if not math.isfinite(loss):
            counts["skipped"] += 1
            in_a_row += 1
            if in_a_row >= max_skips:
                _fail(svi, args, kwargs, done, max_skips)
            continue
        in_a_row = 0
        done += 1
        losses.append(loss)
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(losses)
        if progress and done % 50 == 0:
            bar.set_postfix(loss=f"{loss:.4g}", skipped=counts["skipped"])
        if len(losses) % check_every == 0:
            if stop is not None and stop(losses):
                break
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    bar.close()
    if in_a_row and not done:  # every step of the run was skipped
        _fail(svi, args, kwargs, done, in_a_row)
    return losses


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _fail(svi: Any, args: tuple, kwargs: dict, step: int, max_skips: int) -> None:
    problems = find_nonfinite(svi.model, svi.guide, *args, **kwargs)
    detail = "; ".join(problems) if problems else (
        "no single site or parameter is non-finite on a fresh draw: the bad draws were in the "
        "tails")
    kept = (f"The param store holds the parameters after step {step}, the last finite loss."
            if step > 0 else "No step had a finite loss.")
    raise NonFiniteLossError(
        f"the loss or its gradient was non-finite on {max_skips} steps in a row after step "
        f"{step}: {detail}. {kept} Lower the learning rate, clip gradients "
        "(pyro.optim.ClippedAdam's clip_norm), use a smaller init_scale or a warm start, or "
        "check the model's parameters and priors.", step=step, restored=step > 0)
