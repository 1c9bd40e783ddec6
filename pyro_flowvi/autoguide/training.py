"""A small SVI loop with a progress bar and a clear error when the loss goes non-finite."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

__all__ = ["NonFiniteLossError", "find_nonfinite", "fit_svi"]


class NonFiniteLossError(ValueError):
    """The ELBO became NaN or infinite; the message names the sites/parameters responsible."""


def find_nonfinite(model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> list[str]:
    """Name every parameter, guide value or log-density that is NaN or infinite.

    Runs the guide once, replays the model against it, and checks the parameter store, each
    sample site's value and each site's ``log_prob``.
    """
    problems = [
        f"parameter {name!r}" for name, value in pyro.get_param_store().items()
        if not torch.isfinite(value).all()
    ]
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
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


def fit_svi(svi: SVI, *args: Any, num_steps: int = 1000, progress: bool = True,
            **kwargs: Any) -> list[float]:
    """Run ``num_steps`` SVI steps; return the losses, or raise :class:`NonFiniteLossError`.

    ``SVI.step`` already returns a Python float, so checking it adds no device synchronisation.

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
    losses: list[float] = []
    bar = tqdm(range(num_steps), disable=not progress, desc="SVI", leave=False)
    for step in bar:
        loss = svi.step(*args, **kwargs)
        if not math.isfinite(loss):
            problems = find_nonfinite(svi.model, svi.guide, *args, **kwargs)
            detail = "; ".join(problems) if problems else "no single site or parameter is " \
                "non-finite on a fresh draw: the bad draw was in the tails, try a lower learning " \
                "rate, a smaller init_scale or more particles"
            raise NonFiniteLossError(
                f"the loss became {loss} at step {step}: {detail}. Lower the learning rate, check "
                "the model's parameters and priors, or clip gradients (pyro.optim.ClippedAdam)."
            )
        losses.append(loss)
        if progress and step % 50 == 0:
            bar.set_postfix(loss=f"{loss:.4g}")
    return losses
