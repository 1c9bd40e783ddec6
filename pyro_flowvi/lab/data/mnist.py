"""MNIST readers: the four IDX files and statically binarized MNIST (``.amat``), plus data-dir lookup.

Files are read from a data directory resolved by :func:`find_data_dir`: an explicit argument, else
the ``PYRO_FLOWVI_DATA`` environment variable, else ``../shared/data`` (relative to the working
directory or to the repository holding this package) when it exists.  The layout is

.. code-block:: text

    <data dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <data dir>/binarized_mnist/binarized_mnist_{train,valid,test}.amat[.gz]

(``.gz`` or not; the files may also sit directly in ``<data dir>``).  Every parser checks the
format (IDX magic numbers and sizes; ``.amat`` row length, characters and separators) and raises
:class:`MNISTFormatError` naming the file and what is wrong.  Parsing is pure ``numpy``: the 78 MB
binarized training file loads in well under a second (``frombuffer`` on the ``'0'``/``'1'``
characters at even offsets), so nothing is cached.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pyro_flowvi.lab.common import LabError

__all__ = [
    "AMAT_SPLITS",
    "DATA_ENV",
    "IDX_SPLITS",
    "MNISTFormatError",
    "MNISTNotFoundError",
    "find_data_dir",
    "load_binarized_mnist",
    "load_mnist_idx",
    "read_amat",
    "read_idx",
]

DATA_ENV = "PYRO_FLOWVI_DATA"
"""Environment variable naming the data directory."""
IDX_SPLITS = {"train": "train", "test": "t10k"}
"""IDX split name -> file prefix."""
AMAT_SPLITS = {"train": 50_000, "valid": 10_000, "test": 10_000}
"""Statically binarized MNIST splits and their sizes (Larochelle and Murray 2011)."""
IMAGE_SIDE = 28
_HOW_TO_GET = (
    "Get the IDX files from http://yann.lecun.com/exdb/mnist/ (or any mirror: "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz) into <data dir>/mnist/, and the statically binarized set "
    "binarized_mnist_{train,valid,test}.amat (Larochelle and Murray 2011, e.g. from "
    "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/) into "
    "<data dir>/binarized_mnist/; then pass --data-dir <data dir> or set "
    f"{DATA_ENV}=<data dir>."
)


class MNISTFormatError(LabError, ValueError):
    """A data file exists but is not a well-formed IDX / ``.amat`` file (truncated, corrupted)."""


class MNISTNotFoundError(LabError, FileNotFoundError):
    """No data directory or data file was found; the message says where and how to get them."""


def _default_dirs() -> list[Path]:
    here = Path(__file__).resolve().parents[3]  # the repository (or site-packages) root
    return [Path.cwd() / ".." / "shared" / "data", here / ".." / "shared" / "data"]


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory: ``data_dir``, else ``$PYRO_FLOWVI_DATA``, else ``../shared/data``.

    Raises :class:`MNISTNotFoundError` listing the places tried and how to obtain the files.

    Example:
        >>> import tempfile
        >>> find_data_dir(tempfile.gettempdir()).is_dir()
        True
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise MNISTNotFoundError(f"data directory {str(path)!r} does not exist. {_HOW_TO_GET}")
        return path
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise MNISTNotFoundError(
                f"${DATA_ENV}={env!r} is not a directory. {_HOW_TO_GET}")
        return path
    tried = _default_dirs()
    for path in tried:
        if path.is_dir():
            return path.resolve()
    raise MNISTNotFoundError(
        "no MNIST data directory found: no --data-dir / data_dir argument, no "
        f"${DATA_ENV}, and none of {[str(p) for p in tried]} exists. {_HOW_TO_GET}"
    )


def _locate(root: Path, subdir: str, stem: str) -> Path:
    """``root/subdir/stem[.gz]`` or ``root/stem[.gz]``; a clear error when none exists."""
    candidates = [root / subdir / stem, root / subdir / f"{stem}.gz", root / stem,
                  root / f"{stem}.gz"]
    for path in candidates:
        if path.is_file():
            return path
    raise MNISTNotFoundError(
        f"{stem} not found: looked for {[str(p) for p in candidates]}. {_HOW_TO_GET}")


def _read_bytes(path: Path) -> bytes:
    with path.open("rb") as handle:
        head = handle.read(2)
    try:
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError) as err:  # truncated / corrupted gzip stream
        raise MNISTFormatError(f"{path}: cannot decompress ({err}); the file is corrupted, "
                               "download it again") from err


def read_idx(path: str | os.PathLike) -> NDArray[np.uint8]:
    """Parse one IDX file of unsigned bytes (MNIST images ``(N, 28, 28)`` or labels ``(N,)``).

    The header is the magic number ``0x0000 08 nd`` (``08`` = unsigned byte, ``nd`` dimensions)
    followed by ``nd`` big-endian ``uint32`` sizes; the payload must hold exactly their product
    bytes.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte")
        >>> _ = open(path, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
        >>> read_idx(path)
        array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise MNISTFormatError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, dtype, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
        raise MNISTFormatError(
            f"{path}: bad IDX magic number {raw[:4].hex()} (expected 000008nn: unsigned bytes, "
            "nn dimensions); the file is corrupted or not an IDX file")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MNISTFormatError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise MNISTFormatError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) but the payload has "
            f"{len(raw) - header} bytes; the file is truncated or corrupted, download it again")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def load_mnist_idx(
    split: str = "train", data_dir: str | os.PathLike | None = None, *, labels: bool = True
) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None]:
    """MNIST from the IDX files: images ``(N, 28, 28)`` uint8 in ``[0, 255]`` and labels ``(N,)``.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: the data directory (see :func:`find_data_dir`).
        labels: also read the labels (else ``None`` is returned for them).

    Binarize dynamically (a fresh ``x ~ Bernoulli(pixel / 255)`` each time an image is used) for
    the dynamically binarized benchmark.
    """
    if split not in IDX_SPLITS:
        raise ValueError(f"load_mnist_idx: split must be one of {sorted(IDX_SPLITS)}, got {split!r}")
    root = find_data_dir(data_dir)
    prefix = IDX_SPLITS[split]
    images = read_idx(_locate(root, "mnist", f"{prefix}-images-idx3-ubyte"))
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise MNISTFormatError(
            f"{prefix}-images: expected images of shape (N, 28, 28), got {images.shape}")
    if not labels:
        return images, None
    target = read_idx(_locate(root, "mnist", f"{prefix}-labels-idx1-ubyte"))
    if target.shape != (images.shape[0],):
        raise MNISTFormatError(
            f"{prefix}-labels: expected {images.shape[0]} labels, got shape {target.shape}")
    return images, target


def read_amat(path: str | os.PathLike, dim: int = IMAGE_SIDE * IMAGE_SIDE) -> NDArray[np.uint8]:
    """Parse a binarized-MNIST ``.amat`` text file: rows of ``dim`` ``0``/``1`` values.

    Each row is ``dim`` characters ``'0'`` or ``'1'`` separated by single spaces and ended by a
    newline (``2 dim`` bytes), so the values sit at the even byte offsets of a
    ``(N, 2 dim)`` view of the file.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.amat")
        >>> _ = open(path, "w").write("0 1 1\\n1 0 0\\n")
        >>> read_amat(path, dim=3)
        array([[0, 1, 1],
               [1, 0, 0]], dtype=uint8)
    """
    path = Path(path)
    raw = _read_bytes(path)
    width = 2 * dim
    if len(raw) == 0 or len(raw) % width != 0:
        raise MNISTFormatError(
            f"{path}: {len(raw)} bytes is not a whole number of rows of {dim} space-separated "
            f"0/1 values ({width} bytes each); the file is truncated or corrupted")
    table = np.frombuffer(raw, np.uint8).reshape(-1, width)
    values, seps = table[:, 0::2], table[:, 1::2]
    bad_values = (values != ord("0")) & (values != ord("1"))
    if bad_values.any():
        row, col = np.argwhere(bad_values)[0]
        raise MNISTFormatError(
            f"{path}: row {row + 1}, value {col + 1} is {bytes([values[row, col]])!r}, expected "
            "'0' or '1'; the file is corrupted")
    if (seps[:, :-1] != ord(" ")).any() or (seps[:, -1] != ord("\n")).any():
        row = int(np.argwhere((seps[:, :-1] != ord(" ")).any(1) | (seps[:, -1] != ord("\n")))[0, 0])
        raise MNISTFormatError(
            f"{path}: row {row + 1} does not hold exactly {dim} single-space-separated values "
            "ending in a newline; the file is corrupted")
    return values - np.uint8(ord("0"))


def load_binarized_mnist(
    split: str = "train", data_dir: str | os.PathLike | None = None
) -> NDArray[np.uint8]:
    """Statically binarized MNIST (Larochelle and Murray 2011): ``(N, 784)`` uint8 in ``{0, 1}``.

    Args:
        split: ``"train"`` (50,000), ``"valid"`` (10,000) or ``"test"`` (10,000).
        data_dir: the data directory (see :func:`find_data_dir`).
    """
    if split not in AMAT_SPLITS:
        raise ValueError(
            f"load_binarized_mnist: split must be one of {sorted(AMAT_SPLITS)}, got {split!r}")
    root = find_data_dir(data_dir)
    path = _locate(root, "binarized_mnist", f"binarized_mnist_{split}.amat")
    data = read_amat(path)
    if data.shape[0] != AMAT_SPLITS[split]:
        raise MNISTFormatError(
            f"{path}: expected {AMAT_SPLITS[split]} rows for the {split} split, got "
            f"{data.shape[0]}; the file is truncated or not the canonical one")
    return data
