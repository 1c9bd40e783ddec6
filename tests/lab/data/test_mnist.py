"""MNIST readers: the real files (when ../shared/data is there) and corrupted copies."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from pyro_flowvi.lab.data.mnist import (
    DATA_ENV,
    MNISTFormatError,
    MNISTNotFoundError,
    find_data_dir,
    load_binarized_mnist,
    load_mnist_idx,
    read_amat,
    read_idx,
)

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no ../shared/data")


@needs_data
def test_idx_files_parse():
    images, labels = load_mnist_idx("train", SHARED)
    assert images.shape == (60_000, 28, 28) and images.dtype == np.uint8
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the canonical first labels
    test, test_labels = load_mnist_idx("test", SHARED)
    assert test.shape == (10_000, 28, 28) and np.bincount(test_labels).tolist()[:2] == [980, 1135]
    assert 30 < images.mean() < 35  # mean grey level of MNIST (~33.3)


@needs_data
@pytest.mark.parametrize(("split", "rows"), [("train", 50_000), ("valid", 10_000),
                                             ("test", 10_000)])
def test_binarized_files_parse(split, rows):
    data = load_binarized_mnist(split, SHARED)
    assert data.shape == (rows, 784) and data.dtype == np.uint8
    assert set(np.unique(data).tolist()) == {0, 1}
    assert 0.12 < data.mean() < 0.14


@needs_data
def test_default_data_dir_is_shared(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(Path(__file__).resolve().parents[3])  # the repository root
    assert find_data_dir().resolve() == SHARED.resolve()


def write_idx(path, payload, header):
    path.write_bytes(gzip.compress(bytes(header) + bytes(payload)))


def test_idx_round_trip_and_corruptions(tmp_path):
    header = [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28]
    pixels = np.arange(2 * 784, dtype=np.uint8)
    good = tmp_path / "good-idx3-ubyte.gz"
    write_idx(good, pixels, header)
    assert np.array_equal(read_idx(good).reshape(-1), pixels)
    truncated = tmp_path / "short.gz"
    write_idx(truncated, pixels[:-5], header)
    with pytest.raises(MNISTFormatError, match=r"shape \(2, 28, 28\).*1563 bytes.*truncated"):
        read_idx(truncated)
    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(bytes([0, 0, 9, 3]) + bytes(12))
    with pytest.raises(MNISTFormatError, match="bad IDX magic number"):
        read_idx(bad_magic)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(bytes(header) + bytes(pixels))[:-30])
    with pytest.raises(MNISTFormatError, match="cannot decompress"):
        read_idx(broken_gz)


def test_amat_corruptions(tmp_path):
    rows = np.random.default_rng(0).integers(0, 2, (3, 784))
    text = "".join(" ".join(map(str, r)) + "\n" for r in rows)
    good = tmp_path / "good.amat"
    good.write_text(text)
    assert np.array_equal(read_amat(good), rows)
    bad_char = tmp_path / "char.amat"
    bad_char.write_text(text[:2000] + "7" + text[2001:])
    with pytest.raises(MNISTFormatError, match=r"row 2, value 217 is b'7'"):
        read_amat(bad_char)
    short = tmp_path / "short.amat"
    short.write_text(text[:-4])
    with pytest.raises(MNISTFormatError, match="not a whole number of rows"):
        read_amat(short)
    bad_sep = tmp_path / "sep.amat"
    bad_sep.write_text(text[:1] + "," + text[2:])
    with pytest.raises(MNISTFormatError, match="row 1 does not hold"):
        read_amat(bad_sep)
    # right format, wrong number of rows for the split
    (tmp_path / "binarized_mnist").mkdir()
    (tmp_path / "binarized_mnist" / "binarized_mnist_test.amat").write_text(text)
    with pytest.raises(MNISTFormatError, match="expected 10000 rows for the test split, got 3"):
        load_binarized_mnist("test", tmp_path)


def test_missing_data_says_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(MNISTNotFoundError, match=r"binarized_mnist_train\.amat not found.*"
                       r"looked for.*--data-dir"):
        load_binarized_mnist("train", tmp_path)
    with pytest.raises(MNISTNotFoundError, match="does not exist"):
        load_mnist_idx("train", tmp_path / "nowhere")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(MNISTNotFoundError, match=f"{DATA_ENV}"):
        find_data_dir()
    with pytest.raises(ValueError, match="split must be one of"):
        load_binarized_mnist("validation", tmp_path)
