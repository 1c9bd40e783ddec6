"""The VAE trainer: seeded mini-batches on the device, KL warm-up, checkpoints and DDP.

One optimisation step minimises the per-data-point annealed negative ELBO of a mini-batch,
``-L_beta / N`` (see :mod:`pyro_flowvi.lab.vae.objectives`), with ``beta`` rising linearly from
``1 / steps`` to 1 over the warm-up epochs.  Under ``torchrun`` (``WORLD_SIZE > 1``) the model
and guide are wrapped together in ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA): every
rank draws the same seeded permutation of the data and takes its own stride of it, and DDP
averages the gradients, so with ``W`` ranks of batch ``B`` each step equals a one-process step on
the concatenated ``W B`` batch.  Losses stay on the device; the host reads them every
``log_every`` steps (progress bar) and once per epoch (history, non-finite check).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
import torch.distributed as tdist
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyro_flowvi.autoguide import NonFiniteLossError
from pyro_flowvi.lab.common import UsageError
from pyro_flowvi.lab.models.vae import BernoulliVAE
from pyro_flowvi.lab.vae.averaging import ParameterEMA
from pyro_flowvi.lab.vae.objectives import elbo_terms, importance_weighted_bound

__all__ = [
    "ELBOModule",
    "TrainState",
    "batch_elbo",
    "distributed_context",
    "fit",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "train_step",
]


class ELBOModule(nn.Module):
    """Model and guide as one module whose forward is the loss (what DDP wraps).

    ``forward(x, num_data, beta, index=None)`` returns ``(loss, objective)``: the annealed
    negative ELBO per data point (differentiable) and the plain ELBO per data point (detached).
    With ``num_particles = K > 1`` the objective is instead the importance-weighted bound
    :math:`\\mathcal L_K` per data point (an IWAE; no warm-up: ``beta`` must be 1).
    ``guide_fn`` replaces the guide's call (e.g. ``poutine.condition(guide, ...)`` in tests)
    while the guide's parameters stay registered here.
    """

    def __init__(self, vae: BernoulliVAE, guide: nn.Module,
                 guide_fn: Callable | None = None, num_particles: int = 1) -> None:
        super().__init__()
        if num_particles < 1:
            raise ValueError(f"ELBOModule: num_particles must be >= 1, got {num_particles}")
        self.vae = vae
        self.guide = guide
        self._guide_fn = guide_fn
        self.num_particles = int(num_particles)

    def forward(self, x: Tensor, num_data: int, beta: float | Tensor = 1.0,
                index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        guide = self._guide_fn if self._guide_fn is not None else self.guide
        if self.num_particles > 1:
            if isinstance(beta, float) and beta != 1.0:
                raise ValueError("ELBOModule: KL warm-up anneals the single-sample ELBO; train "
                                 "the importance-weighted bound (num_particles > 1) with beta = 1"
                                 " (--warmup-epochs 0)")
            bound = importance_weighted_bound(self.vae.model, guide, x, self.num_particles).mean()
            return -bound, bound.detach()
        terms = elbo_terms(self.vae.model, guide, x, num_data=num_data, index=index)
        return -terms.elbo(beta) / num_data, terms.elbo().detach() / num_data


def train_step(module: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, num_data: int,
               beta: float | Tensor = 1.0, index: Tensor | None = None) -> Tensor:
    """One gradient step on a mini-batch; returns the batch's ELBO per data point (on device)."""
    loss, elbo = module(x, num_data, beta, index)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return elbo


@torch.no_grad()
def batch_elbo(vae: BernoulliVAE, guide: Callable, data: Tensor, batch_size: int = 1000,
               binarize: bool = False, generator: torch.Generator | None = None) -> float:
    """Single-sample ELBO per data point over ``data`` (nats; validation curve)."""
    total = data.new_zeros(())
    for start in range(0, len(data), batch_size):
        x = data[start:start + batch_size]
        x = torch.bernoulli(x, generator=generator) if binarize else x
        total += elbo_terms(vae.model, guide, x).elbo()
    return float(total) / len(data)


def distributed_context(device: torch.device) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; initialises the process group under ``torchrun``.

    Uses ``nccl`` for CUDA (each rank on ``cuda:LOCAL_RANK``) and ``gloo`` otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return tdist.get_rank(), tdist.get_world_size(), device


@dataclass
class TrainState:
    """What a run carries between epochs (and what a checkpoint holds)."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_valid: float = -math.inf
    best_epoch: int = 0
    best_state: dict[str, Tensor] | None = None
    train_seconds: float = 0.0


def save_checkpoint(path: str | Path, module: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: TrainState, extra: dict[str, Any] | None = None,
                    ema: ParameterEMA | None = None) -> None:
    """Write model, guide, optimiser, schedule, parameter averages, history and RNG states
    (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "module": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "state": state.__dict__,
        "ema": None if ema is None else ema.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "extra": extra or {},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The payload :func:`save_checkpoint` wrote to ``path``; a file that cannot be read (e.g.
    truncated) raises :class:`~pyro_flowvi.lab.common.UsageError` saying so."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same failure
        raise UsageError(f"checkpoint {path} cannot be read ({type(err).__name__}: "
                         f"{str(err).strip().splitlines()[0] if str(err).strip() else err!r}); "
                         "delete it, or run without --resume") from err
    if not isinstance(payload, dict) or not {"module", "optimizer", "state"} <= set(payload):
        raise UsageError(f"checkpoint {path} is not a VAE checkpoint; delete it, or run "
                         "without --resume")
    return payload


def load_checkpoint(path: str | Path | dict[str, Any], module: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    ema: ParameterEMA | None = None) -> TrainState:
    """Restore a checkpoint written by :func:`save_checkpoint` (its path, or the payload of
    :func:`read_checkpoint`); returns the training state."""
    payload = path if isinstance(path, dict) else read_checkpoint(path)
    module.load_state_dict(payload["module"])
    if ema is not None:
        if payload.get("ema") is None:
            raise UsageError("load_checkpoint: the checkpoint holds no parameter averages; "
                             "resume without --ema or start a fresh run")
        ema.load_state_dict(payload["ema"])
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload["scheduler"] is not None:
        scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"]["torch"])
    if payload["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
    return TrainState(**payload["state"])


def _unwrap(module: nn.Module) -> ELBOModule:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def fit(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    valid: Tensor | None = None,
    binarize: bool = False,
    warmup_epochs: float = 0.0,
    scheduler: Any = None,
    rank: int = 0,
    world_size: int = 1,
    eval_every: int = 5,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    state: TrainState | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    log_every: int = 50,
    extra: dict[str, Any] | None = None,
    ema: ParameterEMA | None = None,
) -> TrainState:
    """Train ``module`` (an :class:`ELBOModule`, possibly DDP-wrapped) for ``epochs`` epochs.

    Args:
        train: the training images on the device, float ``(N, 784)``: 0/1 values, or grey
            levels in ``[0, 1]`` with ``binarize=True`` (dynamic binarization: a fresh
            ``Bernoulli(pixel)`` draw each time an image is used).
        valid: optional validation images (same format); its single-sample ELBO is recorded
            every ``eval_every`` epochs and the best parameters are kept in ``state.best_state``.
        warmup_epochs: KL warm-up length (``0``: none).
        checkpoint: file to save to every ``checkpoint_every`` epochs (rank 0 only).
        state: the state returned by :func:`load_checkpoint` to resume from.
        max_seconds: stop after the epoch that crosses this training-time budget.
        ema: parameter averages updated after every step; validation (and so the kept best
            state) then uses the averaged weights.
    """
    state = state or TrainState()
    inner = _unwrap(module)
    num_data = len(train)
    device = train.device
    steps = num_data // (batch_size * world_size)
    if steps < 1:
        raise ValueError(f"fit: {num_data} training images cannot fill one batch of "
                         f"{batch_size} x {world_size} ranks")
    warmup_steps = max(warmup_epochs * steps, 1.0)
    eval_gen = torch.Generator(device=device).manual_seed(seed + 7919)
    bar = tqdm(total=(epochs - state.epoch) * steps, desc="vae", disable=not progress or rank != 0,
               file=sys.stderr, dynamic_ncols=True)
    pyro_validation = pyro.poutine.util.is_validation_enabled()
    pyro.enable_validation(False)  # validation checks read tensors back to the host
    try:
        while state.epoch < epochs:
            t0 = time.perf_counter()
            inner.train()
            gen = torch.Generator(device=device).manual_seed(seed * 100_003 + state.epoch)
            order = torch.randperm(num_data, generator=gen, device=device)[rank::world_size]
            elbos = torch.zeros(steps, device=device)
            for step in range(steps):
                index = order[step * batch_size:(step + 1) * batch_size]
                x = train[index]
                if binarize:
                    x = torch.bernoulli(x)
                beta = min(1.0, (state.epoch * steps + step + 1) / warmup_steps)
                elbos[step] = train_step(module, optimizer, x, num_data, beta, index)
                if ema is not None:
                    ema.update()
                if (step + 1) % log_every == 0 and bar.n < bar.total:
                    bar.set_postfix(elbo=f"{float(elbos[step + 1 - log_every:step + 1].mean()):.2f}",
                                    beta=f"{beta:.2f}", epoch=state.epoch + 1, refresh=False)
                bar.update(1)
            if scheduler is not None:
                scheduler.step()
            train_elbo = float(elbos.mean())
            if not math.isfinite(train_elbo):
                raise NonFiniteLossError(
                    f"fit: the training ELBO became {train_elbo} in epoch {state.epoch + 1}; "
                    "lower the learning rate, lengthen the KL warm-up or clamp the flow's scales "
                    "(--flow-option max_log_scale=2)")
            state.epoch += 1
            seconds = time.perf_counter() - t0
            state.train_seconds += seconds
            record = {"epoch": state.epoch, "train_elbo": train_elbo, "beta": beta,
                      "seconds": seconds, "lr": optimizer.param_groups[0]["lr"]}
            last = state.epoch == epochs or (max_seconds is not None
                                             and state.train_seconds >= max_seconds)
            if valid is not None and rank == 0 and (state.epoch % eval_every == 0 or last):
                inner.eval()
                with ema.swapped() if ema is not None else contextlib.nullcontext():
                    value = batch_elbo(inner.vae, inner.guide, valid, binarize=binarize,
                                       generator=eval_gen)
                    record["valid_elbo"] = value
                    if value > state.best_valid:
                        state.best_valid, state.best_epoch = value, state.epoch
                        state.best_state = copy.deepcopy(inner.state_dict())
            state.history.append(record)
            if checkpoint is not None and rank == 0 and (state.epoch % checkpoint_every == 0
                                                         or last):
                save_checkpoint(checkpoint, inner, optimizer, scheduler, state, extra, ema)
            if last:
                break
    finally:
        pyro.enable_validation(pyro_validation)
        bar.close()
    return state
