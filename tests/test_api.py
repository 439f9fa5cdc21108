"""restore() / perceive(): shapes, dtypes, axes, intensities, tiling, dask, files, errors."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from conftest import tiny_restorer_config
from perceive_ir import api
from perceive_ir.api import Cancelled, InputError, IntensityScaling, Progress, infer_axes, perceive, restore, restore_steps
from perceive_ir.models import Restorer


@pytest.fixture(scope="module")
def identity_restorer() -> Restorer:
    """A restorer whose output equals its input (zero tail, zero-initialised residuals and guidance)."""
    torch.manual_seed(0)
    model = Restorer(tiny_restorer_config()).eval()
    with torch.no_grad():
        model.backbone.tail[0].weight.zero_()
        model.backbone.tail[0].bias.zero_()
    return model


# -- axes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,expected", [((64, 64), "YX"), ((64, 64, 3), "YXC"), ((64, 64, 4), "YXC"),
                                            ((5, 64, 64), "ZYX"), ((3, 64, 64), "ZYX"), ((2, 5, 64, 64), "TZYX"),
                                            ((5, 64, 64, 3), "ZYXC"), ((2, 3, 4, 64, 64), "TCZYX")])
def test_infer_axes(shape, expected) -> None:
    assert infer_axes(shape) == expected


def test_infer_axes_rejects_1d() -> None:
    with pytest.raises(InputError, match="2 to 5 dimensions, got shape \\(10,\\)"):
        infer_axes((10,))


# -- shape and dtype round trips -------------------------------------------------------------

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64]
AXES_CASES = [((40, 52), None), ((40, 52, 3), None), ((40, 52, 4), None), ((3, 40, 52), "CYX"),
              ((5, 40, 52), "CYX"), ((4, 40, 52), None), ((2, 3, 40, 52), "TZYX"), ((3, 40, 52, 3), None),
              ((2, 2, 2, 40, 52), None), ((40, 52, 2), "YXC"), ((52, 40), "XY")]


@pytest.mark.parametrize("shape,axes", AXES_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_shape_and_dtype_are_kept(shape, axes, dtype, tiny_restorer) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random(shape) * 200).astype(dtype)
    result = restore(image, model=tiny_restorer, axes=axes, tile_size=32, tile_overlap=8, device="cpu")
    assert result.shape == image.shape and result.dtype == image.dtype
    as_float = restore(image, model=tiny_restorer, axes=axes, tile_size=32, tile_overlap=8, device="cpu",
                       out_dtype="float32")
    assert as_float.dtype == np.float32 and np.isfinite(as_float).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
def test_integer_scaling_has_an_exact_inverse(dtype, identity_restorer) -> None:
    """With an identity network, integers come back bit for bit (also in stacks and RGB)."""
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    for shape in [(48, 40), (2, 48, 40), (48, 40, 3)]:
        image = rng.integers(max(info.min, -3000), min(info.max, 60000), size=shape).astype(dtype)
        result = restore(image, model=identity_restorer, tile_size=32, tile_overlap=8, device="cpu")
        np.testing.assert_array_equal(result, image)


def test_noisy_floats_are_not_clipped(identity_restorer) -> None:
    rng = np.random.default_rng(2)
    # a dark and a bright half with sigma-50 noise (0-255 scale): many values below 0 and above 1
    clean = np.where(np.arange(64) < 32, 0.02, 0.98)[None, :].repeat(64, 0)
    image = (clean + rng.normal(0, 50 / 255, (64, 64))).astype(np.float32)
    assert (image < -0.3).any() and (image > 1.3).any()
    assert api._scalings(image, api._Layout(image.shape, "YX", 3)) == [IntensityScaling(0.0, 1.0)]
    result = restore(image, model=identity_restorer, tile_size=32, tile_overlap=8, device="cpu")
    np.testing.assert_allclose(result, image, atol=1e-6)


def test_large_range_floats_are_percentile_normalised(identity_restorer) -> None:
    rng = np.random.default_rng(3)
    image = (rng.random((64, 64)) * 5000 + 100).astype(np.float64)
    (scaling,) = api._scalings(image, api._Layout(image.shape, "YX", 3))
    assert scaling.offset > 90 and 4000 < scaling.scale < 5100
    result = restore(image, model=identity_restorer, tile_size=32, tile_overlap=8, device="cpu")
    np.testing.assert_allclose(result, image, rtol=1e-5)


def test_uint8_is_divided_by_255() -> None:
    values = np.array([0, 128, 255], dtype=np.uint8)
    scaling = api._scaling_for(np.dtype(np.uint8), values)
    np.testing.assert_allclose(scaling.forward(values), [0, 128 / 255, 1])


def test_integer_results_are_clipped_to_dtype_range() -> None:
    assert api._to_dtype(np.array([-5.0, 300.4, 12.6]), np.dtype(np.uint8)).tolist() == [0, 255, 13]


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64, np.uint64])
@pytest.mark.parametrize("float_dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("in_place", [False, True])
def test_wide_integer_results_saturate_instead_of_wrapping(dtype, float_dtype, in_place) -> None:
    # float32(2**31 - 1) rounds up to 2**31, which an int32 cast wraps to -2**31
    info = np.iinfo(dtype)
    big = float(np.finfo(float_dtype).max)
    values = np.array([big, -big, 12.6], dtype=float_dtype)
    result = api._to_dtype(values, np.dtype(dtype), in_place=in_place)
    assert result.dtype == dtype
    expected = [min(big, float(info.max)), max(-big, float(info.min))]
    np.testing.assert_allclose(result[:2].astype(np.float64), expected, rtol=1e-6)
    assert result[2] == 13


def test_rgba_alpha_is_passed_through(tiny_restorer) -> None:
    rng = np.random.default_rng(4)
    image = (rng.random((40, 44, 4)) * 255).astype(np.uint8)
    result = restore(image, model=tiny_restorer, tile_size=32, tile_overlap=8, device="cpu")
    np.testing.assert_array_equal(result[..., 3], image[..., 3])


def test_rgb_with_gray_model_is_restored_channel_by_channel(tiny_gray_restorer) -> None:
    rng = np.random.default_rng(5)
    rgb = rng.random((40, 44, 3)).astype(np.float32)
    result = restore(rgb, model=tiny_gray_restorer, tile_size=64, device="cpu")
    for c in range(3):
        single = restore(rgb[..., c], model=tiny_gray_restorer, tile_size=64, device="cpu")
        np.testing.assert_allclose(result[..., c], single, atol=1e-5)


def test_channels_first_multichannel_equals_per_plane(tiny_restorer) -> None:
    """CYX with 5 fluorescence channels: each channel restored like a 2D image (own scaling)."""
    rng = np.random.default_rng(6)
    stack = (rng.random((5, 40, 44)) * np.array([1, 10, 100, 1000, 10000])[:, None, None]).astype(np.float32)
    result = restore(stack, model=tiny_restorer, axes="CYX", tile_size=64, device="cpu")
    for c in range(5):
        single = restore(stack[c], model=tiny_restorer, tile_size=64, device="cpu")
        np.testing.assert_allclose(result[c], single, rtol=1e-4, atol=1e-4 * stack[c].max())


# -- tiling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tile_size,overlap", [(64, 32), (96, 32), (128, 48)])
def test_tiled_result_equals_whole_image(tiny_restorer, tile_size, overlap) -> None:
    rng = np.random.default_rng(7)
    image = np.clip(rng.random((150, 170)) * 0.5 + np.linspace(0, 0.5, 170), 0, 1).astype(np.float32)
    whole = restore(image, model=tiny_restorer, tile_size=256, device="cpu")
    tiled = restore(image, model=tiny_restorer, tile_size=tile_size, tile_overlap=overlap, batch_size=3, device="cpu")
    assert np.abs(whole - image).mean() > 1e-3  # the network does change the image
    assert np.abs(tiled - whole).max() < 5e-3
    assert np.abs(tiled - whole).mean() < 5e-4


def test_progress_reports_every_tile(tiny_restorer) -> None:
    calls: list[tuple[int, int]] = []
    image = np.random.default_rng(8).random((2, 100, 100)).astype(np.float32)
    restore(image, model=tiny_restorer, tile_size=48, tile_overlap=8, batch_size=2, device="cpu",
            progress=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert total == 2 * 9  # 3x3 tiles per plane, 2 planes
    assert calls[-1][0] == total
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_cancel_stops_the_run(tiny_restorer) -> None:
    event = threading.Event()
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done >= 2:
            event.set()

    image = np.random.default_rng(9).random((200, 200)).astype(np.float32)
    with pytest.raises(Cancelled, match="cancelled after 2 of"):
        restore(image, model=tiny_restorer, tile_size=48, tile_overlap=8, batch_size=1, device="cpu",
                progress=progress, cancel=event)
    assert seen == [1, 2]


def test_restore_steps_yields_progress_then_result(tiny_restorer) -> None:
    image = np.random.default_rng(10).random((64, 64)).astype(np.float32)
    steps = list(restore_steps(image, model=tiny_restorer, tile_size=32, tile_overlap=8, device="cpu"))
    assert all(isinstance(s, Progress) for s in steps[:-1])
    assert isinstance(steps[-1], np.ndarray) and steps[-1].shape == image.shape


def test_tile_size_is_chosen_from_memory(tiny_restorer) -> None:
    side = api.choose_tile_size(torch.device("cpu"), batch_size=4)
    assert 128 <= side <= 1024 and side % 64 == 0
    image = np.random.default_rng(11).random((70, 90)).astype(np.float32)
    assert restore(image, model=tiny_restorer, device="cpu").shape == image.shape


# -- dask, zarr, files -------------------------------------------------------------------------


# -- self-ensemble --------------------------------------------------------------------------


class _PointwiseModel(torch.nn.Module):
    """A 1x1 convolution: exactly equivariant to rotations and mirrors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x, condition=None):
        return self.conv(x)


def test_self_ensemble_turns_each_copy_back_before_averaging(tiny_restorer) -> None:
    torch.manual_seed(3)
    batch = torch.rand(2, 3, 32, 48)
    pointwise = _PointwiseModel()
    with torch.no_grad():
        for size in (2, 4, 8):  # an equivariant model gives its plain output
            assert torch.allclose(api.self_ensemble(pointwise, batch, None, size), pointwise(batch), atol=1e-6)
        condition = tiny_restorer.condition(batch)
        copies = [tiny_restorer(batch, condition), tiny_restorer(batch.flip(-1), condition).flip(-1)]
        assert torch.allclose(api.self_ensemble(tiny_restorer, batch, condition, 2), sum(copies) / 2, atol=1e-6)
        turned = torch.rot90(tiny_restorer(torch.rot90(batch, 1, dims=(-2, -1)), condition), -1, dims=(-2, -1))
        four = api.self_ensemble(tiny_restorer, batch, condition, 4)
        assert torch.allclose(four, (copies[0] + turned + sum(
            torch.rot90(tiny_restorer(torch.rot90(batch, k, dims=(-2, -1)), condition), -k, dims=(-2, -1))
            for k in (2, 3))) / 4, atol=1e-6)
        assert not torch.allclose(four, copies[0], atol=1e-4)
    with pytest.raises(InputError, match="ensemble must be one of"):
        api.self_ensemble(tiny_restorer, batch, None, 3)


def test_restore_with_ensemble_tiles_like_the_whole_image_and_works_lazily(tiny_restorer) -> None:
    import dask.array as da

    rng = np.random.default_rng(8)
    image = (rng.random((2, 120, 136)) * 4000).astype(np.uint16)
    plain = restore(image, model=tiny_restorer, axes="ZYX", tile_size=256, device="cpu", out_dtype="float32")
    whole = restore(image, model=tiny_restorer, axes="ZYX", tile_size=256, device="cpu", out_dtype="float32",
                    ensemble=8)
    tiled = restore(image, model=tiny_restorer, axes="ZYX", tile_size=64, tile_overlap=32, device="cpu",
                    out_dtype="float32", ensemble=8)
    assert np.abs(whole - plain).mean() > 10  # (of 4000) the copies differ: the tiny model is not equivariant
    assert np.abs(tiled - whole).max() < 5e-3 * 4000
    lazy = restore(da.from_array(image, chunks=(1, 64, 72)), model=tiny_restorer, axes="ZYX", tile_size=64,
                   tile_overlap=32, device="cpu", out_dtype="float32", ensemble=8)
    assert np.abs(lazy.compute() - tiled).max() < 5e-3 * 4000
    for bad in (0, 3, 16):
        with pytest.raises(InputError, match="ensemble must be one of"):
            restore(image, model=tiny_restorer, axes="ZYX", device="cpu", ensemble=bad)


def test_dask_input_is_lazy_and_matches_memory(tiny_restorer) -> None:
    import dask.array as da

    rng = np.random.default_rng(12)
    image = (rng.random((3, 150, 170)) * 4000).astype(np.uint16)
    lazy = restore(da.from_array(image, chunks=(1, 64, 80)), model=tiny_restorer, tile_size=96, tile_overlap=32,
                   device="cpu", out_dtype="float32")
    assert isinstance(lazy, da.Array) and lazy.shape == image.shape
    in_memory = restore(image, model=tiny_restorer, tile_size=96, tile_overlap=32, device="cpu", out_dtype="float32")
    computed = lazy.compute()
    assert np.abs(computed - in_memory).max() < 5e-3 * 4000


def test_zarr_array_input(tmp_path, tiny_restorer) -> None:
    import zarr

    image = (np.random.default_rng(13).random((80, 90)) * 255).astype(np.uint8)
    array = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape, chunks=(32, 32), dtype=image.dtype)
    array[:] = image
    result = restore(array, model=tiny_restorer, tile_size=48, tile_overlap=8, device="cpu")
    expected = restore(image, model=tiny_restorer, tile_size=48, tile_overlap=8, device="cpu")
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".npy"])
def test_file_to_file(tmp_path, tiny_restorer, suffix) -> None:
    import tifffile

    from perceive_ir.io import read_image

    image = (np.random.default_rng(14).random((2, 90, 100)) * 60000).astype(np.uint16)
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, image)
    target = tmp_path / f"out{suffix}"
    returned = restore(str(source), out=target, model=tiny_restorer, tile_size=48, tile_overlap=8, device="cpu")
    assert returned == target
    written, _info = read_image(target)
    expected = restore(image, model=tiny_restorer, tile_size=48, tile_overlap=8, device="cpu")
    np.testing.assert_array_equal(written, expected)
    with pytest.raises(FileExistsError, match="exists"):
        restore(str(source), out=target, model=tiny_restorer, device="cpu")
    restore(str(source), out=target, overwrite=True, model=tiny_restorer, tile_size=48, device="cpu")


def test_cancelled_file_output_leaves_nothing(tmp_path, tiny_restorer) -> None:
    import tifffile

    source = tmp_path / "in.tif"
    tifffile.imwrite(source, (np.random.default_rng(15).random((200, 200)) * 255).astype(np.uint8))
    target = tmp_path / "out.tif"
    with pytest.raises(Cancelled):
        restore(str(source), out=target, model=tiny_restorer, tile_size=48, tile_overlap=8, batch_size=1,
                device="cpu", cancel=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_input_file_is_never_overwritten_by_default(tmp_path, tiny_restorer) -> None:
    import tifffile

    source = tmp_path / "in.tif"
    data = (np.random.default_rng(16).random((40, 40)) * 255).astype(np.uint8)
    tifffile.imwrite(source, data)
    with pytest.raises(Exception, match="in.tif"):
        restore(str(source), out=source, model=tiny_restorer, device="cpu")
    np.testing.assert_array_equal(tifffile.imread(source), data)


def test_input_arrays_are_not_modified(tiny_restorer) -> None:
    image = np.random.default_rng(17).random((2, 40, 40)).astype(np.float32)
    copy = image.copy()
    restore(image, model=tiny_restorer, tile_size=32, tile_overlap=8, device="cpu")
    np.testing.assert_array_equal(image, copy)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image,kwargs,message", [
    (np.full((32, 32), np.nan, dtype=np.float32), {}, "NaN or infinite"),
    (np.where(np.eye(32) > 0, np.inf, 0).astype(np.float32), {}, "NaN or infinite"),
    (np.zeros((0, 32), dtype=np.float32), {}, "empty"),
    (np.zeros((1, 1), dtype=np.float32), {}, "1x1 pixels"),
    (np.zeros((3, 32, 2), dtype=np.float32), {"axes": "ZYX"}, "3x32|32x2"),
    (np.zeros((32, 32), dtype=bool), {}, "unsupported dtype bool"),
    (np.zeros((32, 32), dtype=np.complex64), {}, "complex"),
    (np.zeros((32, 32), dtype=np.float32), {"axes": "ZYX"}, "3 letters but the image has 2 dimensions"),
    (np.zeros((4, 32, 32), dtype=np.float32), {"axes": "ZYQ"}, "must contain both Y and X"),
    (np.zeros((4, 32, 32), dtype=np.float32), {"axes": "ABC"}, "unknown letters"),
    (np.zeros((32, 32), dtype=np.float32), {"batch_size": 0}, "batch_size must be >= 1, got 0"),
    (np.zeros((32, 32), dtype=np.float32), {"tile_size": 64, "tile_overlap": 64}, "got 64 vs 64"),
    (np.zeros((32, 32), dtype=np.float32), {"out_dtype": "int8"}, "out_dtype must be"),
    ([[1, 2], [3, 4]], {}, "unsupported input of type list"),
])
def test_bad_input_gives_a_clear_error(image, kwargs, message, tiny_restorer) -> None:
    with pytest.raises(InputError, match=message):
        restore(image, model=tiny_restorer, device="cpu", **kwargs)


def test_nan_inside_a_large_image_is_found_per_tile(tiny_restorer) -> None:
    image = np.random.default_rng(18).random((100, 100)).astype(np.float32)
    image[90, 95] = np.nan
    with pytest.raises(InputError, match="NaN"):
        restore(image, model=tiny_restorer, tile_size=32, tile_overlap=8, device="cpu")


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        restore("nope.tif", device="cpu")


def test_unavailable_device_is_named() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(InputError, match="CUDA is not available"):
        api.resolve_device("cuda")
    assert api.resolve_device("auto").type in ("cpu", "mps")


# -- perceive ----------------------------------------------------------------------------------


def test_perceive_grid_and_summary(tiny_perceiver) -> None:
    image = np.random.default_rng(19).random((150, 100)).astype(np.float32)
    calls = []
    quality = perceive(image, model=tiny_perceiver, tile_size=64, device="cpu",
                       progress=lambda d, t: calls.append((d, t)))
    assert quality.probabilities.shape == (3, 2, 3)
    np.testing.assert_allclose(quality.probabilities.sum(-1), 1, atol=1e-5)
    summary = quality.summary
    assert summary["tiles"] == 6 and abs(sum(summary["fraction"].values()) - 1) < 1e-9
    assert 0 <= summary["mean_score"] <= 1
    assert calls[-1] == (6, 6)
    assert quality.to_dict()["tiers"] == ["low", "medium", "high"]


def test_perceive_tiles_with_the_side_the_perceiver_was_trained_to_rate(tiny_perceiver, tmp_path) -> None:
    from dataclasses import replace

    from perceive_ir import load_perceiver
    from perceive_ir.models import PerceiverConfig, QualityPerceiver
    from perceive_ir.zoo import save_weights

    import json

    from safetensors.torch import load_file, safe_open, save_file

    image = np.random.default_rng(22).random((150, 100)).astype(np.float32)
    # a file written before the field (its config has no tile_size) rates 224 px tiles
    save_weights(tiny_perceiver, tmp_path / "old.safetensors")
    with safe_open(str(tmp_path / "old.safetensors"), "pt") as handle:
        metadata = dict(handle.metadata())
    config = json.loads(metadata["perceive_ir.config"])
    del config["tile_size"]
    metadata["perceive_ir.config"] = json.dumps(config)
    save_file(load_file(str(tmp_path / "old.safetensors")), str(tmp_path / "old.safetensors"), metadata=metadata)
    old = load_perceiver(tmp_path / "old.safetensors")
    assert old.config.tile_size == 224
    assert perceive(image, model=old, device="cpu").tile_size == 224
    trained_at_48 = QualityPerceiver(replace(tiny_perceiver.config, tile_size=48))
    trained_at_48.load_state_dict(tiny_perceiver.state_dict())
    save_weights(trained_at_48, tmp_path / "p48.safetensors")
    reloaded = load_perceiver(tmp_path / "p48.safetensors")
    assert reloaded.config.tile_size == 48  # kept in the weights file
    quality = perceive(image, model=reloaded, device="cpu")
    assert quality.tile_size == 48 and quality.probabilities.shape == (4, 3, 3)
    np.testing.assert_allclose(quality.probabilities, perceive(image, model=tiny_perceiver, tile_size=48,
                                                               device="cpu").probabilities, atol=1e-6)
    assert perceive(image, model=reloaded, tile_size=64, device="cpu").probabilities.shape == (3, 2, 3)
    with pytest.raises(ValueError, match="tile_size must be >= 16"):
        PerceiverConfig(tile_size=8)


def test_perceive_stack_and_rgb(tiny_perceiver) -> None:
    rng = np.random.default_rng(20)
    stack = rng.random((2, 70, 70)).astype(np.float32)
    assert perceive(stack, model=tiny_perceiver, tile_size=32, device="cpu").probabilities.shape == (2, 3, 3, 3)
    rgb = (rng.random((70, 70, 3)) * 255).astype(np.uint8)
    assert perceive(rgb, model=tiny_perceiver, tile_size=32, device="cpu").probabilities.shape == (3, 3, 3)


def test_perceive_tile_is_independent_of_neighbours(tiny_perceiver) -> None:
    """Cell (0, 0) depends only on its own pixels."""
    rng = np.random.default_rng(21)
    image = rng.random((128, 128)).astype(np.float32)
    other = image.copy()
    other[64:, 64:] = rng.random((64, 64))
    a = perceive(image, model=tiny_perceiver, tile_size=64, device="cpu").probabilities
    b = perceive(other, model=tiny_perceiver, tile_size=64, device="cpu").probabilities
    np.testing.assert_allclose(a[0, 0], b[0, 0], atol=1e-6)
    assert not np.allclose(a[1, 1], b[1, 1])


def test_set_memory_format_converts_4d_tensors_of_a_model_with_expert_kernels(tiny_restorer) -> None:
    # Module.to(memory_format=...) raises on the 5-D expert kernels; benchmarks/speed.py and restore() use this
    model = copy.deepcopy(tiny_restorer)
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        before = model(x)
        api.set_memory_format(model, torch.channels_last)
        four_d = [p for p in model.parameters() if p.ndim == 4]
        assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
        assert any(p.ndim == 5 for p in model.parameters())
        assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last)), before, atol=1e-5)
        api.set_memory_format(model, torch.contiguous_format)
        assert all(p.is_contiguous() for p in model.parameters())
        assert torch.allclose(model(x), before, atol=1e-6)
