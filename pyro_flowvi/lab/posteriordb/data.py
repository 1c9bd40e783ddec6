"""Locating the posteriordb folder, reading its JSON files, and the :class:`Reference` draws."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ENV_VAR",
    "Reference",
    "default_candidates",
    "parse_stan_name",
    "read_json",
    "resolve_data_dir",
]

ENV_VAR = "PYRO_FLOWVI_POSTERIORDB"
"""Environment variable naming the posteriordb folder (one sub-folder per posterior)."""

_REPO_ROOT = Path(__file__).resolve().parents[3]  # .../<repo>/pyro_flowvi/lab/posteriordb/data.py
_STAN_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9, ]+)\])?$")


def default_candidates() -> list[Path]:
    """The folders tried, in order, when neither an argument nor :data:`ENV_VAR` is given.

    ``Path.cwd() / "../shared/posteriordb"`` and ``<repo root>/../shared/posteriordb``, where the
    repository root is the parent of the ``pyro_flowvi`` package folder.
    """
    return [Path.cwd() / ".." / "shared" / "posteriordb", _REPO_ROOT / ".." / "shared" / "posteriordb"]


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The posteriordb folder: ``data_dir``, else ``$PYRO_FLOWVI_POSTERIORDB``, else a default.

    The defaults are :func:`default_candidates` (first existing one wins).  A given ``data_dir``
    or environment variable is used as is, without falling back to the defaults.

    Raises:
        FileNotFoundError: no candidate folder exists; the message lists every path tried and how
            to point to the files (``--data-dir PATH`` or the environment variable).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     resolve_data_dir(d) == Path(d).resolve()
        True
    """
    if data_dir is not None:
        candidates, source = [Path(data_dir).expanduser()], "the data_dir argument (--data-dir)"
    elif os.environ.get(ENV_VAR):
        candidates, source = [Path(os.environ[ENV_VAR]).expanduser()], f"${ENV_VAR}"
    else:
        candidates, source = default_candidates(), "the default locations"
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    tried = "\n".join(f"  {p.resolve()}" for p in candidates)
    raise FileNotFoundError(
        f"posteriordb files not found; looked for the folder given by {source} at:\n{tried}\n"
        "Expected a folder with one sub-folder per posterior (model.stan, data.json, "
        "reference.json), e.g. the project's shared/posteriordb (see its README.md).  Point to it "
        f"with --data-dir PATH (command line), data_dir=PATH (Python), or {ENV_VAR}=PATH."
    )


def read_json(path: str | Path) -> Any:
    """Parse one JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def parse_stan_name(name: str) -> tuple[str, tuple[int, ...]]:
    """Split a flattened Stan name into the site name and a 0-based index.

    Example:
        >>> parse_stan_name("theta1[2]"), parse_stan_name("sigma"), parse_stan_name("a[1,3]")
        (('theta1', (1,)), ('sigma', ()), ('a', (0, 2)))
    """
    match = _STAN_NAME.match(name)
    if match is None:
        raise ValueError(f"not a flattened Stan parameter name: {name!r}")
    site, index = match.groups()
    return site, tuple(int(i) - 1 for i in index.split(",")) if index else ()


@dataclass
class Reference:
    """Reference posterior on the constrained scale of the Stan ``parameters`` block.

    Args:
        names: flattened coordinate names in Stan order (``"beta[1]"``, ``"sigma"``), K of them.
        mean, sd: per-coordinate mean and standard deviation (ddof=1), shape ``(K,)``.
        q05, q50, q95: quantiles, shape ``(K,)``, or ``None`` when only moments are known.
        draws: ``(N, K)`` joint draws, columns in ``names`` order, or ``None``.
        method: how the reference was made (sampler, R-hat, ESS, ...), as in ``reference.json``'s
            ``reference_method``; an addition to the documented fields.
    """

    names: list[str]
    mean: np.ndarray
    sd: np.ndarray
    q05: np.ndarray | None = None
    q50: np.ndarray | None = None
    q95: np.ndarray | None = None
    draws: np.ndarray | None = None
    method: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, ref: dict[str, Any]) -> Reference:
        """Build from a parsed ``reference.json`` (its ``summary``, ``draws``, ``reference_method``).

        Example:
            >>> r = Reference.from_json({"summary": [
            ...     {"name": "a", "mean": 0.0, "sd": 1.0, "q05": None, "q50": None, "q95": None}],
            ...     "draws": {"a": [0.5, -0.5]}})
            >>> r.names, r.draws.shape, r.q05
            (['a'], (2, 1), None)
        """
        summary = ref["summary"]
        names = [s["name"] for s in summary]

        def column(key: str) -> np.ndarray | None:
            values = [s.get(key) for s in summary]
            return None if any(v is None for v in values) else np.asarray(values, dtype=np.float64)

        draws = ref.get("draws")
        if draws is not None:
            draws = np.column_stack([np.asarray(draws[n], dtype=np.float64) for n in names])
        mean, sd = column("mean"), column("sd")
        assert mean is not None and sd is not None, "reference summary needs mean and sd"
        return cls(
            names=names,
            mean=mean,
            sd=sd,
            q05=column("q05"),
            q50=column("q50"),
            q95=column("q95"),
            draws=draws,
            method=dict(ref.get("reference_method") or {}),
        )

    def summary_from_draws(self) -> dict[str, np.ndarray]:
        """Mean, sd (ddof=1) and 5/50/95 % quantiles of :attr:`draws` (for checks)."""
        if self.draws is None:
            raise ValueError("this reference has no draws")
        q05, q50, q95 = np.quantile(self.draws, [0.05, 0.5, 0.95], axis=0)
        return {"mean": self.draws.mean(0), "sd": self.draws.std(0, ddof=1),
                "q05": q05, "q50": q50, "q95": q95}
