"""Tests for perceive_ir.io (TIFF / zarr / npy reading and atomic writing)."""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from perceive_ir import io as pio
from perceive_ir.io import (
    SUPPORTED_SUFFIXES,
    ImageInfo,
    ImageIOError,
    atomic_output,
    check_output_path,
    needs_bigtiff,
    open_image,
    open_output,
    read_dask,
    read_image,
    write_image,
)

SHAPES = {"YX": (300, 270), "YXC": (290, 300, 3), "ZYX": (3, 280, 260)}
DTYPES = ["uint8", "uint16", "float32"]


def _make(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)


def _stray(folder: Path) -> list[str]:
    """Hidden temporaries left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".npy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axes", list(SHAPES))
def test_round_trip(tmp_path: Path, suffix: str, dtype: str, axes: str) -> None:
    data = _make(SHAPES[axes], dtype)
    out = write_image(tmp_path / f"img{suffix}", data, axes=axes)
    assert out == tmp_path / f"img{suffix}"
    back, info = read_image(out)
    assert isinstance(back, np.ndarray)
    assert back.dtype == data.dtype and back.shape == data.shape
    np.testing.assert_array_equal(back, data)
    assert isinstance(info, ImageInfo)
    assert info.shape == data.shape and info.dtype == data.dtype
    if suffix != ".npy":
        assert info.axes == axes
    assert _stray(tmp_path) == []


def test_rgb_tiff_is_rgb_and_guessed_without_axes(tmp_path: Path) -> None:
    data = _make((64, 80, 3), "uint8")
    p = write_image(tmp_path / "rgb.tif", data)
    with tifffile.TiffFile(p) as tf:
        assert tf.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    np.testing.assert_array_equal(read_image(p)[0], data)


def test_ome_tiff_axes_and_scale(tmp_path: Path) -> None:
    data = _make((2, 40, 50), "uint16")
    p = write_image(tmp_path / "x.ome.tif", data, axes="ZYX", metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25})
    arr, info = open_image(p)
    assert info.metadata["is_ome"]
    assert info.axes == "ZYX"
    assert info.scale == {"X": 0.5, "Y": 0.25}
    np.testing.assert_array_equal(arr[...], data)


def test_png_round_trip(tmp_path: Path) -> None:
    data = _make((20, 30, 3), "uint8")
    p = write_image(tmp_path / "a.png", data)
    back, info = read_image(p)
    assert info.format == "png" and info.axes == "YXS"
    np.testing.assert_array_equal(back, data)
    with pytest.raises(ImageIOError, match="a.jpg"):
        write_image(tmp_path / "a.jpg", data.astype("float32"))


# --------------------------------------------------------------------------
# lazy access
# --------------------------------------------------------------------------


def test_lazy_tiff_open_returns_zarr_and_reads_slices(tmp_path: Path) -> None:
    data = _make((600, 520), "uint16")
    p = tmp_path / "big.tif"
    tifffile.imwrite(p, data, tile=(256, 256), compression="zlib")
    arr, info = open_image(p)
    assert isinstance(arr, zarr.Array)
    assert not isinstance(arr, np.ndarray)
    assert arr.shape == data.shape and arr.dtype == data.dtype
    assert info.format == "tiff" and info.metadata["tiled"]
    np.testing.assert_array_equal(arr[100:140, 300:333], data[100:140, 300:333])
    eager, _ = open_image(p, lazy=False)
    assert isinstance(eager, np.ndarray)
    pio.close_image(arr)
    pio.close_image(eager)  # no-op for numpy
    np.testing.assert_array_equal(arr[:3, :3], data[:3, :3])  # reopens on demand
    pio.close_image(arr)


def test_npy_open_is_memmap(tmp_path: Path) -> None:
    data = _make((50, 60), "float32")
    np.save(tmp_path / "a.npy", data)
    arr, info = open_image(tmp_path / "a.npy")
    assert isinstance(arr, np.memmap) and info.format == "npy"
    np.testing.assert_array_equal(arr[5:9], data[5:9])


@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".npy"])
def test_read_dask(tmp_path: Path, suffix: str) -> None:
    data = _make((3, 300, 280), "uint16")
    p = write_image(tmp_path / f"d{suffix}", data, axes="ZYX")
    arr, info = read_dask(p)
    assert isinstance(arr, da.Array)
    assert arr.shape == data.shape and arr.dtype == data.dtype
    np.testing.assert_array_equal(arr[1, 10:290].compute(), data[1, 10:290])
    arr2, _ = read_dask(p, chunks=(1, 100, 100))
    assert arr2.chunks[1][0] == 100


def test_ome_zarr_multiscale_group_gives_level0(tmp_path: Path) -> None:
    p = tmp_path / "img.ome.zarr"
    full = _make((2, 64, 48), "uint16")
    g = zarr.open_group(str(p), mode="w")
    g.create_array("0", shape=full.shape, dtype=full.dtype, chunks=(1, 32, 32))[...] = full
    g.create_array("1", shape=(2, 32, 24), dtype=full.dtype, chunks=(1, 32, 24))[...] = full[:, ::2, ::2]
    g.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": "sample",
            "axes": [
                {"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]},
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 1.0, 1.0]}]},
            ],
        }
    ]
    arr, info = open_image(p)
    assert arr.shape == full.shape
    assert info.axes == "ZYX"
    assert info.scale == {"Z": 2.0, "Y": 0.5, "X": 0.5}
    assert info.metadata["multiscale_levels"] == 2
    np.testing.assert_array_equal(arr[1, 3:9], full[1, 3:9])


# --------------------------------------------------------------------------
# BigTIFF / tiling
# --------------------------------------------------------------------------


def test_needs_bigtiff() -> None:
    assert not needs_bigtiff((1024, 1024), "uint8")
    assert not needs_bigtiff((4000, 1024, 1024), "uint8")  # ~3.9 GiB < threshold
    assert needs_bigtiff((4096, 1024, 1024), "uint8")  # 4 GiB
    assert needs_bigtiff((2100, 1024, 1024), "uint16")
    assert needs_bigtiff((50000, 50000, 3), "uint8")


def test_bigtiff_flag(tmp_path: Path) -> None:
    p = write_image(tmp_path / "b.tif", _make((32, 32), "uint8"), bigtiff=True)
    with tifffile.TiffFile(p) as tf:
        assert tf.is_bigtiff


def test_tiff_output_is_tiled_only_when_larger_than_tile(tmp_path: Path) -> None:
    big = write_image(tmp_path / "big.tif", _make((300, 270), "uint8"))
    small = write_image(tmp_path / "small.tif", _make((100, 120), "uint8"))
    with tifffile.TiffFile(big) as tf:
        assert tf.pages[0].is_tiled
        assert tf.pages[0].tilelength == 256 and tf.pages[0].tilewidth == 256
    with tifffile.TiffFile(small) as tf:
        assert not tf.pages[0].is_tiled
    with pytest.raises(ImageIOError, match="multiples of 16"):
        write_image(tmp_path / "bad.tif", _make((64, 64), "uint8"), tile=(100, 100))


# --------------------------------------------------------------------------
# dask input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".npy"])
@pytest.mark.parametrize("axes", ["ZYX", "YXC"])
def test_dask_input_written_chunkwise(tmp_path: Path, suffix: str, axes: str) -> None:
    data = _make(SHAPES[axes], "float32", seed=3)
    lazy = da.from_array(data, chunks=(1, 100, 90) if axes == "ZYX" else (100, 90, 3)) * 2
    p = write_image(tmp_path / f"dk{suffix}", lazy, axes=axes)
    np.testing.assert_array_equal(read_image(p)[0], data * 2)
    if suffix == ".tif":
        with tifffile.TiffFile(p) as tf:
            assert tf.pages[0].is_tiled


def test_lazy_array_like_input_is_streamed(tmp_path: Path) -> None:
    data = _make((300, 280), "uint16")
    src = write_image(tmp_path / "src.zarr", data)
    arr, _ = open_image(src)
    out = write_image(tmp_path / "copy.tif", arr)
    np.testing.assert_array_equal(read_image(out)[0], data)


class _RecordingArray:
    """Array-like that records which regions are read from it."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, index: object) -> np.ndarray:
        block = self._data[index]
        self.reads.append(block.shape)
        return block


def test_tiff_streaming_reads_one_row_band_at_a_time(tmp_path: Path) -> None:
    data = _make((2, 600, 300), "uint8")
    src = _RecordingArray(data)
    p = write_image(tmp_path / "s.tif", src, axes="ZYX", tile=(256, 256))
    assert src.reads == [(256, 300), (256, 300), (88, 300)] * 2  # each band read once
    np.testing.assert_array_equal(read_image(p)[0], data)


# --------------------------------------------------------------------------
# atomic output and path checks
# --------------------------------------------------------------------------


def test_existing_output_refused_before_work(tmp_path: Path) -> None:
    p = tmp_path / "out.tif"
    p.write_bytes(b"original")
    ran = []
    with pytest.raises(FileExistsError, match="overwrite"):
        with atomic_output(p):
            ran.append(True)
    assert not ran
    with pytest.raises(FileExistsError, match="out.tif"):
        write_image(p, np.zeros((8, 8), np.uint8))
    assert p.read_bytes() == b"original"


def test_overwrite_replaces(tmp_path: Path) -> None:
    p = tmp_path / "out.tif"
    write_image(p, np.zeros((16, 16), np.uint8))
    write_image(p, np.ones((16, 16), np.uint8), overwrite=True)
    np.testing.assert_array_equal(read_image(p)[0], 1)
    z = tmp_path / "out.zarr"
    write_image(z, np.zeros((16, 16), np.uint8))
    write_image(z, np.full((16, 16), 7, np.uint8), overwrite=True)
    np.testing.assert_array_equal(read_image(z)[0], 7)
    assert _stray(tmp_path) == []


def test_exception_keeps_original_and_removes_temp(tmp_path: Path) -> None:
    p = tmp_path / "out.tif"
    p.write_bytes(b"original")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(p, overwrite=True) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".tif") and tmp.name.startswith(".")
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"original"
    assert _stray(tmp_path) == []


def test_atomic_output_success_leaves_no_strays(tmp_path: Path) -> None:
    p = tmp_path / "out.npy"
    with atomic_output(p) as tmp:
        np.save(tmp, np.arange(4))
        assert not p.exists()
    np.testing.assert_array_equal(np.load(p), np.arange(4))
    assert sorted(os.listdir(tmp_path)) == ["out.npy"]
    with atomic_output(tmp_path / "report.json") as tmp:  # any suffix is fine here
        tmp.write_text("{}")
    with pytest.raises(ImageIOError, match="nothing was written"):
        with atomic_output(tmp_path / "never.tif"):
            pass
    assert sorted(os.listdir(tmp_path)) == ["out.npy", "report.json"]


def test_output_equal_to_input_refused(tmp_path: Path) -> None:
    p = write_image(tmp_path / "in.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(ImageIOError, match="same file as the input"):
        check_output_path(p, overwrite=False, input_path=tmp_path / "." / "in.tif")
    assert check_output_path(p, overwrite=True, input_path=p) == p
    assert check_output_path(tmp_path / "new.tif", overwrite=False, input_path=p) == tmp_path / "new.tif"
    with pytest.raises(FileNotFoundError, match="nodir"):
        check_output_path(tmp_path / "nodir" / "x.tif", overwrite=False)


# --------------------------------------------------------------------------
# errors on reading
# --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.tif"
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        open_image(p)
    with pytest.raises(FileNotFoundError, match="nope.zarr"):
        read_image(tmp_path / "nope.zarr")


def test_random_bytes_tiff(tmp_path: Path) -> None:
    p = tmp_path / "x.tif"
    p.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ImageIOError, match=r"x\.tif.*not a TIFF file"):
        open_image(p)


def test_truncated_tiff(tmp_path: Path) -> None:
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, _make((2, 300, 300), "uint16"), tile=(256, 256), compression="zlib")
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageIOError, match=r"t\.tif.*truncated"):
        open_image(p)
    p.write_bytes(raw[:6])
    with pytest.raises(ImageIOError, match=r"t\.tif"):
        read_image(p)


def test_other_corrupt_inputs(tmp_path: Path) -> None:
    (tmp_path / "e.tif").write_bytes(b"")
    with pytest.raises(ImageIOError, match="empty"):
        open_image(tmp_path / "e.tif")
    (tmp_path / "p.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(ImageIOError, match="PNG"):
        open_image(tmp_path / "p.tif")
    (tmp_path / "b.npy").write_bytes(b"garbage")
    with pytest.raises(ImageIOError, match=r"b\.npy"):
        open_image(tmp_path / "b.npy")
    (tmp_path / "b.png").write_bytes(b"garbage")
    with pytest.raises(ImageIOError, match=r"b\.png"):
        open_image(tmp_path / "b.png")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(ImageIOError, match=r"empty\.zarr"):
        open_image(tmp_path / "empty.zarr")


def test_unsupported_suffix_lists_supported(tmp_path: Path) -> None:
    p = tmp_path / "a.bmp"
    p.write_bytes(b"BM")
    with pytest.raises(ImageIOError) as exc:
        open_image(p)
    msg = str(exc.value)
    assert "a.bmp" in msg
    for suffix in SUPPORTED_SUFFIXES:
        assert suffix in msg
    with pytest.raises(ImageIOError, match=r"\.ome\.zarr"):
        write_image(tmp_path / "b.gif", np.zeros((4, 4), np.uint8))


def test_bad_axes(tmp_path: Path) -> None:
    with pytest.raises(ImageIOError, match="axes"):
        write_image(tmp_path / "a.tif", np.zeros((4, 4), np.uint8), axes="ZYX")


# --------------------------------------------------------------------------
# incremental output
# --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".ome.tif", ".npy"])
@pytest.mark.parametrize("axes", ["YX", "YXC", "ZYX"])
def test_open_output_blocks(tmp_path: Path, suffix: str, axes: str) -> None:
    data = _make(SHAPES[axes], "uint16", seed=5)
    p = tmp_path / f"o{suffix}"
    ydim = 1 if axes == "ZYX" else 0
    h, w = data.shape[ydim], data.shape[ydim + 1]
    with open_output(p, data.shape, data.dtype, axes=axes) as out:
        assert out.shape == data.shape and out.dtype == data.dtype
        assert not p.exists()
        # blocks deliberately not aligned with the 256x256 tiles
        for y in range(0, h, 100):
            for x in range(0, w, 110):
                idx = [slice(None)] * data.ndim
                idx[ydim] = slice(y, y + 100)
                idx[ydim + 1] = slice(x, x + 110)
                out[tuple(idx)] = data[tuple(idx)]
        np.testing.assert_array_equal(out[:2], data[:2])  # read back before close
    back, info = read_image(p)
    np.testing.assert_array_equal(back, data)
    if suffix == ".ome.tif":
        assert info.axes == axes.replace("C", "S")  # OME names interleaved samples S
    elif suffix != ".npy":
        assert info.axes == axes
    if suffix.endswith(".tif"):
        with tifffile.TiffFile(p) as tf:
            assert tf.pages[0].is_tiled
    assert _stray(tmp_path) == []


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_open_output_exception_leaves_nothing(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"o{suffix}"
    with pytest.raises(KeyboardInterrupt):
        with open_output(p, (300, 300), np.float32) as out:
            out[:100, :100] = 1.0
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_open_output_refuses_existing(tmp_path: Path) -> None:
    p = write_image(tmp_path / "o.zarr", np.zeros((8, 8), np.uint8))
    with pytest.raises(FileExistsError):
        with open_output(p, (8, 8), np.uint8):
            pytest.fail("body must not run")
    with open_output(p, (8, 8), np.uint8, overwrite=True) as out:
        out[2:4] = 9
    back, _ = read_image(p)
    assert back.sum() == 9 * 16


def test_module_has_no_torch_or_package_imports() -> None:
    src = Path(pio.__file__).read_text()
    assert "import torch" not in src
    assert "from perceive_ir" not in src and "from ." not in src
