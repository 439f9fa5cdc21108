"""Image reading and atomic writing for TIFF, Zarr, NumPy and PNG/JPEG files.

This module is the only place where perceive_ir touches image files.  It is
built for images that may be far larger than memory:

* :func:`open_image` returns a *lazy* array-like (a :class:`zarr.Array` or a
  :class:`numpy.memmap`) that supports NumPy basic slicing without loading
  the whole image; :func:`read_dask` wraps the same data in a dask array and
  :func:`read_image` loads everything eagerly.
* :func:`write_image` writes NumPy arrays, dask arrays and other lazy
  array-likes.  Non-NumPy input is streamed one row band of tiles at a time.
* :func:`open_output` gives an incrementally writable output (``out[region] =
  block``) for out-of-core tiled processing.
* Every write goes to a temporary sibling of the output first and is renamed
  into place only on success (:func:`atomic_output`), so a crash or an error
  never leaves a half-written file under the output name, and an existing
  output is never replaced unless ``overwrite=True``.

Axes
----
Arrays are stored with the spatial axes last: ``(..., Y, X)`` for grey images
and ``(..., Y, X, S)`` for images with interleaved samples/channels (RGB).
Axes strings use the tifffile / OME letters (``T``, ``Z``, ``C``, ``Y``,
``X``, ``S`` ...).  When a file carries axes metadata it is reported in
:attr:`ImageInfo.axes`; otherwise that field is ``None``.

Only numpy, tifffile, zarr and dask are imported at module level (Pillow is
imported lazily for PNG/JPEG).  Dask arrays created here from TIFF files use
tifffile's zarr store, which cannot be pickled: use the threaded (default)
dask scheduler for them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import shutil
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import dask.array as da
import numpy as np
import tifffile
import zarr

__all__ = [
    "SUPPORTED_SUFFIXES",
    "BIGTIFF_THRESHOLD",
    "ImageIOError",
    "ImageInfo",
    "OutputArray",
    "atomic_output",
    "check_output_path",
    "close_image",
    "format_from_path",
    "needs_bigtiff",
    "open_image",
    "open_output",
    "read_dask",
    "read_image",
    "write_image",
]

PathLike = Union[str, "os.PathLike[str]"]

#: File name suffixes understood by this module (matched case-insensitively).
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".tif",
    ".tiff",
    ".ome.tif",
    ".ome.tiff",
    ".zarr",
    ".ome.zarr",
    ".npy",
    ".png",
    ".jpg",
    ".jpeg",
)

_SUFFIX_FORMAT: dict[str, str] = {
    ".ome.tiff": "tiff",
    ".ome.tif": "tiff",
    ".ome.zarr": "zarr",
    ".tiff": "tiff",
    ".tif": "tiff",
    ".zarr": "zarr",
    ".npy": "npy",
    ".png": "png",
    ".jpeg": "jpeg",
    ".jpg": "jpeg",
}

#: Uncompressed data size (bytes) above which classic TIFF cannot be used.
#: Classic TIFF offsets are 32 bit; 32 MiB are kept free for IFDs/metadata.
BIGTIFF_THRESHOLD: int = 2**32 - 2**25

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OTHER_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG file"),
    (b"\xff\xd8\xff", "a JPEG file"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x89HDF", "an HDF5 file"),
    (b"GIF8", "a GIF file"),
)
# Chunks smaller than this are merged for dask (strip-based TIFFs can have
# one-row strips, which would give millions of dask tasks).
_MIN_DASK_CHUNK_BYTES = 1 << 20
_OVERWRITE_HINT = "pass overwrite=True (CLI: --overwrite) to replace it"


class ImageIOError(ValueError):
    """An image file cannot be read or written (corrupt, unsupported, ...).

    The message always names the offending path and the reason.
    """


@dataclass(frozen=True)
class ImageInfo:
    """Description of an opened image.

    Attributes
    ----------
    path : pathlib.Path
        The file or directory that was opened.
    format : str
        ``"tiff"``, ``"zarr"``, ``"npy"``, ``"png"`` or ``"jpeg"``.
    shape : tuple of int
        Shape of the returned array (full-resolution level).
    dtype : numpy.dtype
        Data type of the returned array.
    axes : str or None
        One letter per dimension (e.g. ``"ZYX"``, ``"YXS"``) taken from the
        TIFF series or the OME-Zarr ``multiscales`` metadata, or ``None`` when
        the file does not say.
    scale : dict of str to float, or None
        Physical pixel size per axis letter (e.g. ``{"Y": 0.1, "X": 0.1}``)
        when the file records it, else ``None``.  Units, if known, are in
        ``metadata["units"]``.
    metadata : dict
        Small, format-specific extra information (never pixel data).
    """

    path: Path
    format: str
    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str | None = None
    scale: dict[str, float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Uncompressed size of the full-resolution data in bytes."""
        return int(math.prod(self.shape)) * int(np.dtype(self.dtype).itemsize)


# --------------------------------------------------------------------------
# paths and formats
# --------------------------------------------------------------------------


def _matched_suffix(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(_SUFFIX_FORMAT, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def format_from_path(path: PathLike) -> str:
    """Return the image format implied by a path's suffix.

    Parameters
    ----------
    path : str or os.PathLike
        File or directory name; only the suffix is looked at.

    Returns
    -------
    str
        ``"tiff"``, ``"zarr"``, ``"npy"``, ``"png"`` or ``"jpeg"``.

    Raises
    ------
    ImageIOError
        If the suffix is not one of :data:`SUPPORTED_SUFFIXES`.
    """
    p = Path(path)
    suffix = _matched_suffix(p)
    if suffix is None:
        raise ImageIOError(
            f"unsupported image format for '{path}' (suffix "
            f"{p.suffix or '<none>'!r}); supported suffixes are: "
            + ", ".join(SUPPORTED_SUFFIXES)
        )
    return _SUFFIX_FORMAT[suffix]


def _temp_sibling(path: Path, tag: str, suffix: str | None = None) -> Path:
    """Hidden, unique sibling of ``path`` that keeps the real suffix last.

    ``out.ome.tif`` -> ``.out.ome.tif.3fa9c2d1.tmp.ome.tif``.
    """
    if suffix is None:
        suffix = _matched_suffix(path) or path.suffix
    token = secrets.token_hex(4)
    return path.with_name(f".{path.name}.{token}.{tag}{suffix}")


def _remove(path: Path) -> None:
    """Remove a file or directory tree if it exists (best effort)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _fsync(path: Path, *, directory: bool = False) -> None:
    """Best-effort fsync so a rename cannot expose an empty file after a crash."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.abspath(os.path.realpath(a))) == os.path.normcase(
        os.path.abspath(os.path.realpath(b))
    )


def _check_output(path: Path, overwrite: bool, input_path: PathLike | None) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write '{path}': output directory '{parent}' does not exist")
    if input_path is not None and _same_path(path, Path(input_path)) and not overwrite:
        raise ImageIOError(
            f"output '{path}' is the same file as the input; choose another output path or "
            "pass overwrite=True (CLI: --overwrite) to replace the input"
        )
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"output '{path}' exists; {_OVERWRITE_HINT}")


def check_output_path(
    path: PathLike, *, overwrite: bool = False, input_path: PathLike | None = None
) -> Path:
    """Validate an image output path before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        Intended output file (or ``.zarr`` directory).
    overwrite : bool, optional
        Whether an existing output (or the input itself) may be replaced.
    input_path : str or os.PathLike, optional
        The input image; writing onto it is refused unless ``overwrite``.

    Returns
    -------
    pathlib.Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    ImageIOError
        If the suffix is not in :data:`SUPPORTED_SUFFIXES`, or ``path`` is
        ``input_path`` and ``overwrite`` is false.
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        If the output's parent directory does not exist.
    """
    p = Path(path)
    format_from_path(p)
    _check_output(p, overwrite, input_path)
    return p


def _commit(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move the finished temporary ``tmp`` onto ``final``."""
    if tmp.is_file():
        _fsync(tmp)
    if os.path.lexists(final):
        if not overwrite:
            raise FileExistsError(f"output '{final}' appeared while writing; {_OVERWRITE_HINT}")
        if tmp.is_file() and not final.is_dir():
            os.replace(tmp, final)
        else:
            # directories cannot be replaced atomically: move the old one aside,
            # move the new one in, then delete the old one.
            old = _temp_sibling(final, "old")
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)
                raise
            _remove(old)
    else:
        os.replace(tmp, final)
    _fsync(final.parent if str(final.parent) else Path("."), directory=True)


@contextlib.contextmanager
def atomic_output(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Context manager that writes to a temporary path and renames on success.

    The existence check happens *before* the body runs, so no work is wasted
    on an output that would be refused.

    Parameters
    ----------
    path : str or os.PathLike
        Final output path (file or directory; any suffix).
    overwrite : bool, optional
        Replace an existing ``path``.  Files are replaced with
        :func:`os.replace`; directories are moved aside, replaced and the old
        one deleted.

    Yields
    ------
    pathlib.Path
        A hidden temporary path in the same directory, ending with the same
        suffix as ``path`` (e.g. ``.out.tif.3fa9c2d1.tmp.tif``) so writers
        choose the same format.  The body must create it.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false (raised on entry).
    FileNotFoundError
        If the parent directory of ``path`` does not exist (raised on entry).
    ImageIOError
        If the body created nothing at the temporary path.

    Notes
    -----
    If the body raises, the temporary is deleted, ``path`` is left untouched
    and the exception propagates.
    """
    final = Path(path)
    _check_output(final, overwrite, None)
    tmp = _temp_sibling(final, "tmp")
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise ImageIOError(f"cannot write '{final}': nothing was written to the temporary output")
        _commit(tmp, final, overwrite)
    except BaseException:
        _remove(tmp)
        raise


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------


def _check_exists(path: Path) -> None:
    if not os.path.lexists(path):
        raise FileNotFoundError(f"cannot read '{path}': no such file or directory")
    if not path.exists():
        raise FileNotFoundError(f"cannot read '{path}': broken symbolic link")


def _sniff(head: bytes) -> str | None:
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic):
            return what
    return None


def _tiff_scale(tf: tifffile.TiffFile, series: Any, axes: str | None) -> tuple[dict[str, float] | None, dict[str, Any]]:
    """Physical pixel sizes from OME-XML, ImageJ or resolution tags."""
    scale: dict[str, float] = {}
    units: dict[str, str] = {}
    try:
        if tf.is_ome and tf.ome_metadata:
            root = ET.fromstring(tf.ome_metadata)
            pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
            if pixels is not None:
                for ax in "XYZ":
                    value = pixels.get(f"PhysicalSize{ax}")
                    if value is not None:
                        scale[ax] = float(value)
                        units[ax] = pixels.get(f"PhysicalSize{ax}Unit", "µm")
        elif tf.is_imagej or series.keyframe.resolutionunit in (2, 3):
            page = series.keyframe
            xres, yres = page.resolution
            if xres > 0 and yres > 0 and (xres, yres) != (1.0, 1.0):
                scale["X"], scale["Y"] = 1.0 / xres, 1.0 / yres
                unit = {2: "inch", 3: "cm"}.get(int(page.resolutionunit))
                ij = tf.imagej_metadata or {}
                unit = ij.get("unit", unit)
                if unit:
                    units["X"] = units["Y"] = str(unit)
            ij = tf.imagej_metadata or {}
            if "spacing" in ij:
                scale["Z"] = float(ij["spacing"])
                if "unit" in ij:
                    units["Z"] = str(ij["unit"])
    except Exception:  # metadata is optional; never fail a read because of it
        return None, {}
    if axes is not None:
        scale = {k: v for k, v in scale.items() if k in axes}
        units = {k: v for k, v in units.items() if k in scale}
    return (scale or None), ({"units": units} if units else {})


def _segment_end(page: Any) -> int:
    offsets = getattr(page, "dataoffsets", ()) or ()
    counts = getattr(page, "databytecounts", ()) or ()
    ends = [int(o) + int(c) for o, c in zip(offsets, counts) if c]
    return max(ends) if ends else 0


def _check_tiff_extent(series: Any, filesize: int, path: Path) -> None:
    """Raise if image data of ``series`` lies beyond the end of the file."""
    end = 0
    offset = getattr(series, "dataoffset", None)
    if offset is not None:
        end = int(offset) + int(series.nbytes)
    else:
        pages = series.pages
        candidates = [pages[0]]
        if len(pages) > 1:
            candidates.append(pages[len(pages) - 1])
        for page in candidates:
            if page is not None:
                end = max(end, _segment_end(page))
    if end > filesize:
        raise ImageIOError(
            f"cannot read '{path}': file is truncated (image data extends to byte {end}, "
            f"file has {filesize} bytes)"
        )


class _TiffLogCapture(logging.Handler):
    """Collect tifffile's log messages that reveal a damaged file."""

    _SIGNS = ("invalid page offset", "missing data offset", "truncated", "corrupt")

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            return
        if any(sign in msg.lower() for sign in self._SIGNS):
            self.problems.append(msg)


@contextlib.contextmanager
def _capture_tifffile_log() -> Iterator[_TiffLogCapture]:
    handler = _TiffLogCapture()
    log = logging.getLogger("tifffile")
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


def _open_tiff(path: Path, lazy: bool) -> tuple[Any, ImageInfo]:
    if path.is_dir():
        raise ImageIOError(f"cannot read '{path}': is a directory, expected a TIFF file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise ImageIOError(f"cannot read '{path}': file is empty")
    if head[:4] not in _TIFF_MAGIC:
        other = _sniff(head)
        hint = f"; it looks like {other}" if other else ""
        raise ImageIOError(f"cannot read '{path}': not a TIFF file (bad magic bytes {head[:4]!r}){hint}")
    try:
        with _capture_tifffile_log() as log, tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise ImageIOError(f"cannot read '{path}': TIFF file contains no image series")
            series = tf.series[0]
            if log.problems:
                raise ImageIOError(
                    f"cannot read '{path}': TIFF file is truncated or corrupt ({log.problems[0]})"
                )
            _check_tiff_extent(series, tf.filehandle.size, path)
            axes = str(series.axes).upper() if series.axes else None
            scale, extra = _tiff_scale(tf, series, axes)
            metadata: dict[str, Any] = {
                "series": len(tf.series),
                "levels": len(series.levels),
                "is_ome": bool(tf.is_ome),
                "is_imagej": bool(tf.is_imagej),
                "tiled": bool(series.keyframe.is_tiled),
                "compression": series.keyframe.compression.name,
                "photometric": series.keyframe.photometric.name,
                **extra,
            }
            if lazy:
                data: Any = None
                try:
                    store = series.aszarr(level=0)
                    data = zarr.open(store, mode="r")
                    metadata["lazy"] = "zarr"
                except Exception:
                    # e.g. tifffile>=2025 with zarr 2: fall back to a memory map
                    # when the data is stored contiguously, else read eagerly.
                    if getattr(series, "dataoffset", None) is not None:
                        data = tifffile.memmap(path, series=0, mode="r")
                        metadata["lazy"] = "memmap"
                if data is None:
                    data = series.asarray(level=0)
                    metadata["lazy"] = False
            else:
                data = series.asarray(level=0)
    except ImageIOError:
        raise
    except Exception as exc:  # tifffile raises many types (struct.error, KeyError, ...)
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ImageIOError(f"cannot read '{path}': corrupt or unsupported TIFF file ({reason})") from exc
    info = ImageInfo(
        path=path,
        format="tiff",
        shape=tuple(int(s) for s in data.shape),
        dtype=np.dtype(data.dtype),
        axes=axes if axes and len(axes) == len(data.shape) else None,
        scale=scale,
        metadata=metadata,
    )
    return data, info


def _ome_multiscales(attrs: Mapping[str, Any]) -> list[Any] | None:
    ms = attrs.get("multiscales")
    if ms is None and isinstance(attrs.get("ome"), Mapping):  # OME-Zarr 0.5
        ms = attrs["ome"].get("multiscales")
    return ms if isinstance(ms, list) and ms else None


def _scale_from_transforms(transforms: Any) -> list[float] | None:
    for tr in transforms or ():
        if isinstance(tr, Mapping) and tr.get("type") == "scale" and "scale" in tr:
            return [float(v) for v in tr["scale"]]
    return None


def _zarr_axes_attr(attrs: Mapping[str, Any], ndim: int) -> str | None:
    for key in ("axes", "_ARRAY_DIMENSIONS"):
        value = attrs.get(key)
        if isinstance(value, str) and len(value) == ndim:
            return value.upper()
        if isinstance(value, (list, tuple)) and len(value) == ndim:
            names = [str(v) for v in value]
            if all(len(n) == 1 for n in names):
                return "".join(names).upper()
    return None


def _open_zarr(path: Path, lazy: bool) -> tuple[Any, ImageInfo]:
    try:
        node = zarr.open(str(path), mode="r")
    except FileNotFoundError as exc:
        if not path.exists():
            raise
        raise ImageIOError(
            f"cannot read '{path}': not a zarr array or group (no zarr metadata found)"
        ) from exc
    except Exception as exc:
        raise ImageIOError(f"cannot read '{path}': corrupt or unsupported zarr store ({exc})") from exc

    axes: str | None = None
    scale: dict[str, float] | None = None
    metadata: dict[str, Any] = {}
    try:
        if isinstance(node, zarr.Group):
            group = node
            ms = _ome_multiscales(group.attrs)
            if ms is None and "0" in group and isinstance(group["0"], zarr.Group):
                # bioformats2raw layout: the image is the group "0"
                sub = group["0"]
                if _ome_multiscales(sub.attrs) is not None:
                    group, ms = sub, _ome_multiscales(sub.attrs)
                    metadata["image_path"] = "0"
            if ms is not None:
                multiscale = ms[0]
                datasets = multiscale.get("datasets") or []
                if not datasets:
                    raise ImageIOError(f"cannot read '{path}': OME-Zarr multiscales metadata lists no datasets")
                level_path = str(datasets[0]["path"])
                arr = group[level_path]
                metadata["multiscale_levels"] = len(datasets)
                metadata["level_path"] = level_path
                if multiscale.get("version"):
                    metadata["ome_version"] = str(multiscale["version"])
                if multiscale.get("name"):
                    metadata["name"] = str(multiscale["name"])
                raw_axes = multiscale.get("axes")
                names: list[str] = []
                if raw_axes:
                    names = [str(a["name"] if isinstance(a, Mapping) else a) for a in raw_axes]
                    units = {
                        str(a["name"]).upper(): str(a["unit"])
                        for a in raw_axes
                        if isinstance(a, Mapping) and a.get("unit")
                    }
                    if units:
                        metadata["units"] = units
                    if len(names) == arr.ndim and all(len(n) == 1 for n in names):
                        axes = "".join(names).upper()
                    else:
                        metadata["axis_names"] = names
                level_scale = _scale_from_transforms(datasets[0].get("coordinateTransformations"))
                global_scale = _scale_from_transforms(multiscale.get("coordinateTransformations"))
                if level_scale is not None and len(level_scale) == arr.ndim:
                    if global_scale is not None and len(global_scale) == arr.ndim:
                        level_scale = [a * b for a, b in zip(level_scale, global_scale)]
                    keys = list(axes) if axes else [n.upper() for n in names] if len(names) == arr.ndim else None
                    if keys:
                        scale = dict(zip(keys, level_scale))
            else:
                arrays = sorted(k for k, _ in group.arrays())
                if "0" in arrays:
                    level_path = "0"
                elif len(arrays) == 1:
                    level_path = arrays[0]
                else:
                    raise ImageIOError(
                        f"cannot read '{path}': zarr group has no OME multiscales metadata and "
                        f"{'no arrays' if not arrays else 'several arrays ' + str(arrays)}; "
                        "cannot tell which one is the image"
                    )
                arr = group[level_path]
                metadata["level_path"] = level_path
                axes = _zarr_axes_attr(arr.attrs, arr.ndim)
        else:
            arr = node
            axes = _zarr_axes_attr(arr.attrs, arr.ndim)
    except ImageIOError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot read '{path}': corrupt or unsupported zarr store ({exc})") from exc

    fmt_version = getattr(getattr(arr, "metadata", None), "zarr_format", None)
    if fmt_version is not None:
        metadata["zarr_format"] = int(fmt_version)
    metadata["chunks"] = tuple(int(c) for c in arr.chunks)
    data: Any = arr
    if not lazy:
        try:
            data = np.asarray(arr[...])
        except Exception as exc:
            raise ImageIOError(f"cannot read '{path}': corrupt zarr data ({exc})") from exc
    info = ImageInfo(
        path=path,
        format="zarr",
        shape=tuple(int(s) for s in arr.shape),
        dtype=np.dtype(arr.dtype),
        axes=axes,
        scale=scale,
        metadata=metadata,
    )
    return data, info


def _open_npy(path: Path, lazy: bool) -> tuple[Any, ImageInfo]:
    if path.is_dir():
        raise ImageIOError(f"cannot read '{path}': is a directory, expected a .npy file")
    try:
        data = np.load(path, mmap_mode="r" if lazy else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageIOError(f"cannot read '{path}': not a valid .npy file ({exc})") from exc
    if not isinstance(data, np.ndarray):
        raise ImageIOError(f"cannot read '{path}': expected a single array, got {type(data).__name__}")
    if data.dtype.hasobject or data.dtype.names is not None:
        raise ImageIOError(f"cannot read '{path}': unsupported dtype {data.dtype} (need a numeric image)")
    info = ImageInfo(
        path=path,
        format="npy",
        shape=tuple(int(s) for s in data.shape),
        dtype=np.dtype(data.dtype),
        metadata={"fortran_order": bool(data.flags.f_contiguous and not data.flags.c_contiguous)},
    )
    return data, info


def _open_pillow(path: Path, fmt: str) -> tuple[Any, ImageInfo]:
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise ImageIOError(f"cannot read '{path}': is a directory, expected a {fmt.upper()} file")
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif mode == "1":
                img = img.convert("L")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            data = np.asarray(img)
    except Image.DecompressionBombError as exc:
        raise ImageIOError(
            f"cannot read '{path}': image exceeds Pillow's decompression-bomb pixel limit; "
            "convert it to TIFF or zarr for large images"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageIOError(f"cannot read '{path}': corrupt or unsupported {fmt.upper()} file ({exc})") from exc
    data = np.ascontiguousarray(data)
    axes = "YX" if data.ndim == 2 else "YXS" if data.ndim == 3 else None
    info = ImageInfo(
        path=path,
        format=fmt,
        shape=tuple(int(s) for s in data.shape),
        dtype=np.dtype(data.dtype),
        axes=axes,
        metadata={"mode": mode},
    )
    return data, info


def open_image(path: PathLike, *, lazy: bool = True) -> tuple[Any, ImageInfo]:
    """Open an image without loading it (where the format allows).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.tif``/``.tiff``/``.ome.tif`` file, a ``.zarr``/``.ome.zarr``
        array or group, a ``.npy`` file, or a ``.png``/``.jpg`` file.
    lazy : bool, optional
        If true (default) return a lazy array-like: a :class:`zarr.Array`
        for TIFF (via tifffile's zarr store, first series, full-resolution
        level) and zarr, a read-only :class:`numpy.memmap` for ``.npy``.
        PNG/JPEG are always read eagerly.  If false, return a
        :class:`numpy.ndarray`.

    Returns
    -------
    array : array_like
        Supports NumPy basic slicing, ``.shape`` and ``.dtype``; slicing
        returns a :class:`numpy.ndarray`.  Axes are as stored in the file and
        described by ``info.axes`` (spatial axes last: ``(..., Y, X)`` or
        ``(..., Y, X, S)``).  For an OME-Zarr / multiscale group this is the
        full-resolution dataset (the first one listed in ``multiscales``).
    info : ImageInfo
        Format, shape, dtype, axes, pixel scale and small metadata.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageIOError
        If the suffix is unsupported (the message lists the supported
        suffixes) or the file is corrupt, truncated or of the wrong type.
    """
    p = Path(path)
    fmt = format_from_path(p)
    _check_exists(p)
    if fmt == "tiff":
        return _open_tiff(p, lazy)
    if fmt == "zarr":
        return _open_zarr(p, lazy)
    if fmt == "npy":
        return _open_npy(p, lazy)
    return _open_pillow(p, fmt)


def close_image(array: Any) -> None:
    """Release the file handles held by a lazy array from :func:`open_image`.

    Lazy TIFF arrays keep the file open (tifffile's zarr store) until they
    are garbage-collected; call this when done, e.g. before deleting or
    replacing the file on Windows.  Reading the array again reopens the file.
    Arrays without closable storage (NumPy, memmap) are ignored.

    Parameters
    ----------
    array : array_like
        The array returned by :func:`open_image` (or any object).
    """
    store = getattr(array, "store", None)
    close = getattr(store, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


def read_image(path: PathLike) -> tuple[np.ndarray, ImageInfo]:
    """Read a whole image into memory.

    Parameters
    ----------
    path : str or os.PathLike
        Any file accepted by :func:`open_image`.

    Returns
    -------
    array : numpy.ndarray
        The full-resolution image, axes as described by ``info.axes``.
    info : ImageInfo
        Image description.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageIOError
        If the format is unsupported or the file is corrupt.
    """
    data, info = open_image(path, lazy=False)
    if not isinstance(data, np.ndarray) or isinstance(data, np.memmap):
        try:
            data = np.array(data[...])
        except Exception as exc:
            raise ImageIOError(f"cannot read '{info.path}': {exc}") from exc
    return data, info


def _default_dask_chunks(shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...]) -> Any:
    nbytes = math.prod(chunks) * np.dtype(dtype).itemsize
    if nbytes >= _MIN_DASK_CHUNK_BYTES:
        return chunks
    return da.core.normalize_chunks("auto", shape, dtype=dtype, previous_chunks=chunks)


def read_dask(path: PathLike, *, chunks: Any = None) -> tuple[da.Array, ImageInfo]:
    """Open an image as a lazy dask array.

    Parameters
    ----------
    path : str or os.PathLike
        Any file accepted by :func:`open_image`.
    chunks : optional
        Dask chunk specification.  By default the storage chunks (TIFF tiles
        or strips, zarr chunks) are used, merged when they are tiny.

    Returns
    -------
    array : dask.array.Array
        Lazy view of the full-resolution image (axes as ``info.axes``).
        TIFF-backed arrays must be computed with the threaded scheduler.
    info : ImageInfo
        Image description.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageIOError
        If the format is unsupported or the file is corrupt.
    """
    data, info = open_image(path, lazy=True)
    if isinstance(data, zarr.Array):
        if chunks is None:
            chunks = _default_dask_chunks(info.shape, info.dtype, tuple(data.chunks))
        return da.from_zarr(data, chunks=chunks), info
    if chunks is None:
        chunks = "auto"
    return da.from_array(data, chunks=chunks, asarray=True), info


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------


def needs_bigtiff(shape: Sequence[int], dtype: Any) -> bool:
    """Return whether image data of this size needs the BigTIFF format.

    Parameters
    ----------
    shape : sequence of int
        Array shape.
    dtype : numpy dtype-like
        Array data type.

    Returns
    -------
    bool
        True when the uncompressed size exceeds :data:`BIGTIFF_THRESHOLD`
        (``2**32 - 2**25`` bytes: classic TIFF has 32-bit offsets).
    """
    nbytes = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
    return nbytes > BIGTIFF_THRESHOLD


@dataclass(frozen=True)
class _Layout:
    """How an array maps onto TIFF pages / zarr chunks."""

    shape: tuple[int, ...]
    samples: bool  # trailing axis holds interleaved samples (channels)
    rgb: bool
    axes: str | None

    @property
    def lead(self) -> tuple[int, ...]:
        return self.shape[:-3] if self.samples else self.shape[:-2]

    @property
    def height(self) -> int:
        return self.shape[-3] if self.samples else self.shape[-2]

    @property
    def width(self) -> int:
        return self.shape[-2] if self.samples else self.shape[-1]

    @property
    def nsamples(self) -> int:
        return self.shape[-1] if self.samples else 1


def _layout(shape: tuple[int, ...], axes: str | None, path: Path) -> _Layout:
    ndim = len(shape)
    if ndim < 2:
        raise ImageIOError(f"cannot write '{path}': image must have at least 2 dimensions, got shape {shape}")
    if any(s <= 0 for s in shape):
        raise ImageIOError(f"cannot write '{path}': image is empty (shape {shape})")
    if axes is not None:
        if not isinstance(axes, str) or len(axes) != ndim or len(set(axes.upper())) != ndim or not axes.isalpha():
            raise ImageIOError(
                f"cannot write '{path}': axes {axes!r} must be {ndim} distinct letters, one per dimension of shape {shape}"
            )
        axes = axes.upper()
        samples = ndim >= 3 and axes[-1] in "CS"
    else:
        # guess: (Y, X, 3|4) is an RGB(A) image
        samples = ndim == 3 and shape[-1] in (3, 4) and shape[-2] > 4
    rgb = samples and shape[-1] in (3, 4)
    return _Layout(tuple(int(s) for s in shape), samples, rgb, axes)


def _check_tile(tile: Sequence[int] | None, path: Path) -> tuple[int, int] | None:
    if tile is None:
        return None
    if len(tile) != 2 or any(int(t) <= 0 or int(t) % 16 for t in tile):
        raise ImageIOError(f"cannot write '{path}': tile {tuple(tile)} must be two positive multiples of 16")
    return int(tile[0]), int(tile[1])


def _tiff_tile(layout: _Layout, tile: tuple[int, int] | None) -> tuple[int, int] | None:
    """Tile shape for the TIFF pages, or None for strips (small pages)."""
    if tile is None or (layout.height <= tile[0] and layout.width <= tile[1]):
        return None

    def up16(n: int) -> int:
        return -(-n // 16) * 16

    return min(tile[0], up16(layout.height)), min(tile[1], up16(layout.width))


def _zarr_chunks(layout: _Layout, tile: tuple[int, int] | None) -> tuple[int, ...]:
    ty, tx = tile if tile is not None else (256, 256)
    chunks = (1,) * len(layout.lead) + (min(ty, layout.height), min(tx, layout.width))
    if layout.samples:
        chunks += (layout.nsamples,)
    return chunks


def _full_index(layout: _Layout, lead: tuple[int, ...], rows: slice) -> tuple[Any, ...]:
    index: tuple[Any, ...] = lead + (rows, slice(None))
    if layout.samples:
        index += (slice(None),)
    return index


def _tiff_kwargs(
    path: Path,
    layout: _Layout,
    dtype: np.dtype,
    tile: tuple[int, int] | None,
    compression: str | None,
    metadata: Mapping[str, Any] | None,
    bigtiff: bool | None,
) -> dict[str, Any]:
    md: dict[str, Any] = dict(metadata or {})
    is_ome = path.name.lower().endswith((".ome.tif", ".ome.tiff"))
    if layout.axes is not None:
        axes = layout.axes
        if is_ome and layout.samples and axes[-1] == "C":
            axes = axes[:-1] + "S"  # OME/tifffile name interleaved samples 'S'
        md["axes"] = axes
    kwargs: dict[str, Any] = {
        "bigtiff": needs_bigtiff(layout.shape, dtype) if bigtiff is None else bool(bigtiff),
        "photometric": "rgb" if layout.rgb else "minisblack",
        "compression": None if compression in (None, "none", "None") else compression,
        "metadata": md,
    }
    if layout.samples:
        kwargs["planarconfig"] = "contig"
    if tile is not None:
        kwargs["tile"] = tile
    return kwargs


def _iter_tiff_segments(
    source: Any, layout: _Layout, dtype: np.dtype, tile: tuple[int, int] | None
) -> Iterator[np.ndarray]:
    """Yield pages (untiled) or tiles in TIFF order, reading one row band at a time."""
    for lead in np.ndindex(*layout.lead) if layout.lead else [()]:
        if tile is None:
            page = np.asarray(source[_full_index(layout, lead, slice(None))])
            yield np.ascontiguousarray(page, dtype=dtype)
            continue
        ty, tx = tile
        for y0 in range(0, layout.height, ty):
            rows = slice(y0, min(y0 + ty, layout.height))
            band = np.asarray(source[_full_index(layout, lead, rows)]).astype(dtype, copy=False)
            for x0 in range(0, layout.width, tx):
                # edge tiles may be smaller; tifffile zero-pads them
                yield np.ascontiguousarray(band[:, x0 : x0 + tx])
            del band


def _write_tiff(
    tmp: Path,
    final: Path,
    array: Any,
    layout: _Layout,
    dtype: np.dtype,
    tile: tuple[int, int] | None,
    compression: str | None,
    metadata: Mapping[str, Any] | None,
    bigtiff: bool | None,
) -> None:
    page_tile = _tiff_tile(layout, tile)
    kwargs = _tiff_kwargs(tmp, layout, dtype, page_tile, compression, metadata, bigtiff)
    try:
        if isinstance(array, np.ndarray):
            tifffile.imwrite(tmp, array, **kwargs)
        else:
            segments = _iter_tiff_segments(array, layout, dtype, page_tile)
            tifffile.imwrite(tmp, data=segments, shape=layout.shape, dtype=dtype, **kwargs)
    except (ValueError, TypeError, KeyError, tifffile.TiffFileError) as exc:
        raise ImageIOError(f"cannot write '{final}': {exc}") from exc


def _create_zarr(path: Path, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...], attrs: Mapping[str, Any]) -> Any:
    z = zarr.open(str(path), mode="w-", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
    if attrs:
        z.attrs.update(dict(attrs))
    return z


def _copy_bands(source: Any, target: Any, layout: _Layout, band_rows: int) -> None:
    """Copy an array-like into ``target`` one row band at a time."""
    for lead in np.ndindex(*layout.lead) if layout.lead else [()]:
        for y0 in range(0, layout.height, band_rows):
            index = _full_index(layout, lead, slice(y0, min(y0 + band_rows, layout.height)))
            target[index] = np.asarray(source[index])


def _store_any(array: Any, target: Any, layout: _Layout, chunks: tuple[int, ...] | None) -> None:
    """Write numpy / dask / lazy array-like ``array`` into ``target``."""
    if isinstance(array, np.ndarray):
        target[...] = array
    elif isinstance(array, da.Array):
        if chunks is not None:
            array = array.rechunk(chunks)  # one dask chunk per storage chunk: no races
        da.store(array, target, lock=False)
    else:
        _copy_bands(array, target, layout, chunks[-3 if layout.samples else -2] if chunks else 256)


def _attrs(layout: _Layout, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    attrs = dict(metadata or {})
    if layout.axes is not None:
        attrs["axes"] = layout.axes
    return attrs


def _write_pillow(tmp: Path, final: Path, array: Any, fmt: str) -> None:
    from PIL import Image

    data = np.asarray(array)
    grey = data.ndim == 2
    colour = data.ndim == 3 and data.shape[-1] in ((3, 4) if fmt == "png" else (3,))
    ok = data.dtype == np.uint8 and (grey or colour)
    ok = ok or (fmt == "png" and data.dtype == np.uint16 and grey)
    if not ok:
        allowed = "uint8 grey/RGB(A) or uint16 grey" if fmt == "png" else "uint8 grey/RGB"
        raise ImageIOError(
            f"cannot write '{final}': {fmt.upper()} supports only {allowed} images, "
            f"got {data.dtype} with shape {data.shape}; use .tif or .zarr"
        )
    img = Image.fromarray(np.ascontiguousarray(data))
    if fmt == "jpeg":
        img.save(tmp, format="JPEG", quality=95)
    else:
        img.save(tmp, format="PNG")


def write_image(
    path: PathLike,
    array: Any,
    *,
    overwrite: bool = False,
    axes: str | None = None,
    tile: Sequence[int] | None = (256, 256),
    compression: str | None = "zlib",
    metadata: Mapping[str, Any] | None = None,
    bigtiff: bool | None = None,
) -> Path:
    """Write an image atomically (temporary file + rename).

    Parameters
    ----------
    path : str or os.PathLike
        Output path; the suffix selects the format (TIFF, OME-TIFF, zarr,
        npy, PNG, JPEG).
    array : array_like
        ``numpy.ndarray``, ``dask.array.Array`` or a lazy array-like with
        ``shape``, ``dtype`` and NumPy slicing (e.g. from :func:`open_image`),
        axes ``(..., Y, X)`` or ``(..., Y, X, S)``.  Non-NumPy input is never
        loaded whole: TIFF output is streamed one row band of tiles at a time
        (each band of a dask array is computed once), zarr/npy output is
        written chunk by chunk.  The dtype is kept.  Dask row chunks that are
        multiples of ``tile[0]`` avoid computing chunks that straddle two
        bands twice.
    overwrite : bool, optional
        Replace an existing ``path``.
    axes : str, optional
        One letter per dimension, e.g. ``"YX"``, ``"ZYX"``, ``"YXC"``.  A
        trailing ``C``/``S`` marks interleaved samples; with 3 or 4 of them
        TIFF output is RGB(A).  Without axes, a ``(Y, X, 3|4)`` array is
        taken as RGB(A).  Stored as TIFF/OME metadata or zarr ``attrs``.
    tile : tuple of int or None, optional
        TIFF tile shape (multiples of 16), used only for pages larger than a
        tile; also the zarr chunk shape of the last two spatial axes.
        ``None`` writes TIFF strips.
    compression : str or None, optional
        TIFF compression (tifffile name, e.g. ``"zlib"``, ``"zstd"``), or
        ``None``.  Ignored for other formats.
    metadata : mapping, optional
        Extra metadata: passed to :func:`tifffile.imwrite` (e.g.
        ``PhysicalSizeX`` for OME-TIFF; must be JSON-serialisable for plain
        TIFF) or stored in zarr ``attrs``.
    bigtiff : bool, optional
        Force (True) or forbid (False) BigTIFF; default decides with
        :func:`needs_bigtiff`.

    Returns
    -------
    pathlib.Path
        The final output path.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false (before any work).
    ImageIOError
        For unsupported suffixes, invalid axes/tile, or data the format
        cannot hold.
    """
    final = Path(path)
    fmt = format_from_path(final)
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        array = np.asarray(array)
    shape = tuple(int(s) for s in array.shape)
    dtype = np.dtype(array.dtype)
    if dtype.hasobject or dtype.names is not None:
        raise ImageIOError(f"cannot write '{final}': unsupported dtype {dtype}")
    layout = _layout(shape, axes, final)
    tile_ = _check_tile(tile, final)
    with atomic_output(final, overwrite=overwrite) as tmp:
        if fmt == "tiff":
            _write_tiff(tmp, final, array, layout, dtype, tile_, compression, metadata, bigtiff)
        elif fmt == "zarr":
            chunks = _zarr_chunks(layout, tile_)
            z = _create_zarr(tmp, shape, dtype, chunks, _attrs(layout, metadata))
            _store_any(array, z, layout, chunks)
        elif fmt == "npy":
            if isinstance(array, np.ndarray):
                np.save(tmp, np.asarray(array), allow_pickle=False)
            else:
                mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
                _store_any(array, mm, layout, None)
                mm.flush()
                del mm
        else:
            _write_pillow(tmp, final, array, fmt)
    return final


class OutputArray:
    """Incrementally written output image returned by :func:`open_output`.

    Supports region assignment ``out[index] = block`` and reading back
    ``out[index]`` with NumPy basic slicing (integers and slices).  Writes
    are serialised with a lock, so several threads may write (even regions
    sharing a storage chunk).  Unwritten regions read as 0.

    Attributes
    ----------
    path : pathlib.Path
        Final output path (exists only after a successful close).
    shape : tuple of int
        Output shape, axes ``(..., Y, X)`` or ``(..., Y, X, S)``.
    dtype : numpy.dtype
        Output data type.
    axes : str or None
        Axes string, if given.
    """

    def __init__(self, target: Any, path: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str | None) -> None:
        self._target = target
        self._lock = threading.Lock()
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.axes = axes

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def __setitem__(self, index: Any, value: Any) -> None:
        value = np.asarray(value)
        with self._lock:
            self._target[index] = value

    def __getitem__(self, index: Any) -> np.ndarray:
        with self._lock:
            return np.asarray(self._target[index])

    def __repr__(self) -> str:
        return f"OutputArray(path={str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


@contextlib.contextmanager
def open_output(
    path: PathLike,
    shape: Sequence[int],
    dtype: Any,
    *,
    overwrite: bool = False,
    axes: str | None = None,
    tile: Sequence[int] | None = (256, 256),
    compression: str | None = "zlib",
    metadata: Mapping[str, Any] | None = None,
    bigtiff: bool | None = None,
) -> Iterator[OutputArray]:
    """Create an output image to be filled region by region (out of core).

    Parameters
    ----------
    path : str or os.PathLike
        Final output path (TIFF, OME-TIFF, zarr, npy; PNG/JPEG are kept in
        memory and only suit small images).
    shape : sequence of int
        Output shape, axes ``(..., Y, X)`` or ``(..., Y, X, S)``.
    dtype : numpy dtype-like
        Output data type.
    overwrite, axes, tile, compression, metadata, bigtiff
        As for :func:`write_image`.

    Yields
    ------
    OutputArray
        Assign regions with ``out[index] = block``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false (on entry).
    ImageIOError
        For unsupported suffixes or invalid shape/axes/tile.

    Notes
    -----
    Data goes to a hidden temporary next to ``path`` and is moved onto
    ``path`` only when the ``with`` block exits normally; on an exception
    every temporary is deleted and ``path`` is left untouched.

    For zarr and npy the temporary is the output itself (a zarr array with
    ``(1, ..., 256, 256)`` chunks, or a ``.npy`` memory map).  For TIFF,
    regions are written to a compressed scratch zarr store beside the output
    whose chunks match the TIFF tiles; on close it is streamed into a tiled
    (Big)TIFF one row band of tiles at a time and deleted.  Memory therefore
    stays bounded by one row band of tiles (``tile[0] * width * samples``
    elements), never the whole image; disk needs room for the scratch store
    plus the TIFF.
    """
    final = Path(path)
    fmt = format_from_path(final)
    shape_t = tuple(int(s) for s in shape)
    dtype_ = np.dtype(dtype)
    if dtype_.hasobject or dtype_.names is not None:
        raise ImageIOError(f"cannot write '{final}': unsupported dtype {dtype_}")
    layout = _layout(shape_t, axes, final)
    tile_ = _check_tile(tile, final)
    with atomic_output(final, overwrite=overwrite) as tmp:
        if fmt == "zarr":
            z = _create_zarr(tmp, shape_t, dtype_, _zarr_chunks(layout, tile_), _attrs(layout, metadata))
            yield OutputArray(z, final, shape_t, dtype_, layout.axes)
        elif fmt == "npy":
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype_, shape=shape_t)
            try:
                yield OutputArray(mm, final, shape_t, dtype_, layout.axes)
                mm.flush()
            finally:
                del mm
        elif fmt == "tiff":
            page_tile = _tiff_tile(layout, tile_)
            if page_tile is not None:
                chunks = (1,) * len(layout.lead) + page_tile + ((layout.nsamples,) if layout.samples else ())
            else:
                chunks = _zarr_chunks(layout, None)
            scratch = _temp_sibling(final, "scratch", ".zarr")
            try:
                z = _create_zarr(scratch, shape_t, dtype_, chunks, {})
                yield OutputArray(z, final, shape_t, dtype_, layout.axes)
                _write_tiff(tmp, final, z, layout, dtype_, tile_, compression, metadata, bigtiff)
            finally:
                _remove(scratch)
        else:
            buffer = np.zeros(shape_t, dtype_)
            yield OutputArray(buffer, final, shape_t, dtype_, layout.axes)
            _write_pillow(tmp, final, buffer, fmt)
