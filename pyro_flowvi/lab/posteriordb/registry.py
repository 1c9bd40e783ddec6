"""Which posteriors exist and how to build them: :func:`available_posteriors`, :func:`load_posterior`."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .data import ENV_VAR, Reference, read_json, resolve_data_dir
from .funnel import NAME as _FUNNEL
from .glm import NAME as _GLM
from .gp import accel_gp, accel_gp_data
from .hmm import hmm_drive_0, hmm_drive_1, hmm_drive_data, hmm_example, hmm_example_data
from .posterior import Posterior
from .regression import (
    blr,
    blr_data,
    earnings_data,
    flat_regression,
    kidiq_data,
    kidscore_interaction,
    mesquite_data,
)
from .timeseries import arma11, arma11_data

__all__ = [
    "EXTRA_POSTERIORS", "OWN_POSTERIORS", "PORTS", "Port", "available_posteriors", "load_posterior",
]


@dataclass(frozen=True)
class Port:
    """A ported posteriordb posterior: the Pyro model, how to build its args from ``data.json``
    (``data_fn(data, dtype=...)``), its plate nesting, and its folder under the data dir."""

    model: Callable[..., Any]
    data_fn: Callable[..., tuple]
    max_plate_nesting: int
    folder: str = ""
    extra: bool = False


def _port(model: Callable[..., Any], data_fn: Callable[..., tuple], mpn: int, **kw: Any) -> Port:
    return Port(model, data_fn, mpn, **kw)


PORTS: dict[str, Port] = {
    "arma-arma11": _port(arma11, arma11_data, 0),
    "bball_drive_event_0-hmm_drive_0": _port(
        hmm_drive_0, partial(hmm_drive_data, model="hmm_drive_0"), 0),
    "bball_drive_event_1-hmm_drive_1": _port(
        hmm_drive_1, partial(hmm_drive_data, model="hmm_drive_1"), 0),
    "earnings-earn_height": _port(flat_regression, partial(earnings_data, model="earn_height"), 1),
    "earnings-logearn_interaction": _port(
        flat_regression, partial(earnings_data, model="logearn_interaction"), 1),
    "earnings-logearn_interaction_z": _port(
        flat_regression, partial(earnings_data, model="logearn_interaction_z"), 1),
    "hmm_example-hmm_example": _port(hmm_example, hmm_example_data, 0),
    "kidiq-kidscore_interaction": _port(kidscore_interaction, kidiq_data, 1),
    "mesquite-logmesquite_logvas": _port(
        flat_regression, partial(mesquite_data, model="logmesquite_logvas"), 1),
    "mesquite-mesquite": _port(flat_regression, partial(mesquite_data, model="mesquite"), 1),
    "sblrc-blr": _port(blr, blr_data, 1),
    "sblri-blr": _port(blr, blr_data, 1),
    "mcycle_gp-accel_gp": _port(accel_gp, accel_gp_data, 1,
                                folder="extra_moments_only/mcycle_gp-accel_gp", extra=True),
}
"""posteriordb name -> :class:`Port` (12 with full reference draws, plus the moments-only extra)."""

EXTRA_POSTERIORS = tuple(n for n, p in PORTS.items() if p.extra)
OWN_POSTERIORS = (_FUNNEL, _GLM)
"""Our own posteriors (:mod:`.own`; reference JSONs ship with the package)."""


def _folder(name: str) -> str:
    return PORTS[name].folder or name


def available_posteriors(data_dir: str | Path | None = None, include_extra: bool = False) -> list[str]:
    """Sorted names of the loadable posteriors.

    The ported posteriordb ones whose folder holds a ``reference.json`` in the data dir (see
    :func:`~.data.resolve_data_dir`), plus our own two, which need no data dir.  When neither
    ``data_dir`` nor ``$PYRO_FLOWVI_POSTERIORDB`` is given and no default folder exists, only our
    own are listed; a given folder that does not exist raises ``FileNotFoundError``.
    ``include_extra=True`` adds ``mcycle_gp-accel_gp`` (66-d, moments-only reference).

    Example:
        >>> "funnel-centered_hierarchical" in available_posteriors()
        True
    """
    names = list(OWN_POSTERIORS)
    try:
        root = resolve_data_dir(data_dir)
    except FileNotFoundError:
        if data_dir is not None or os.environ.get(ENV_VAR):
            raise
        return sorted(names)
    for name, port in PORTS.items():
        if (include_extra or not port.extra) and (root / _folder(name) / "reference.json").is_file():
            names.append(name)
    return sorted(names)


def load_posterior(name: str, data_dir: str | Path | None = None,
                   dtype: torch.dtype = torch.float64) -> Posterior:
    """Build the :class:`~.posterior.Posterior` called ``name``, data as ``dtype`` tensors.

    Raises:
        ValueError: unknown name (the message lists the known names and the closest matches).
        FileNotFoundError: the posteriordb folder (or the posterior's sub-folder) is missing.

    Example:
        >>> p = load_posterior("glm-hierarchical_poisson")
        >>> p.dim, p.reference.draws.shape
        (17, (1000, 17))
    """
    if name in OWN_POSTERIORS:
        from .own import load_own  # lazy: keeps `python -m ...posteriordb.own` free of runpy warnings

        return load_own(name, dtype)
    if name not in PORTS:
        known = sorted((*PORTS, *OWN_POSTERIORS))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown posterior {name!r}.{hint} Known: {', '.join(known)}.")
    port = PORTS[name]
    folder = resolve_data_dir(data_dir) / _folder(name)
    if not (folder / "reference.json").is_file():
        raise FileNotFoundError(f"{folder / 'reference.json'} not found: the data dir lacks {name!r}")
    ref = read_json(folder / "reference.json")
    args = port.data_fn(read_json(folder / "data.json"), dtype=dtype)
    return Posterior(name=name, model=port.model, args=tuple(args), kwargs={},
                     dim=int(ref["dimension"]), reference=Reference.from_json(ref),
                     description=ref.get("description", ""), why_hard=ref.get("why_hard", ""),
                     max_plate_nesting=port.max_plate_nesting)
