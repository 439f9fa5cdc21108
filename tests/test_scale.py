"""Stacks batched across planes, dask.distributed workers, bounded memory accumulation."""

from __future__ import annotations

import numpy as np
import pytest

from perceive_ir.api import restore, restore_steps


def test_small_planes_share_batches(tiny_restorer) -> None:
    """A ZYX stack of planes smaller than a tile: batches span planes; result equals plane by plane."""
    rng = np.random.default_rng(0)
    stack = rng.random((7, 40, 48)).astype(np.float32)
    calls = []
    batched = restore(stack, model=tiny_restorer, tile_size=64, batch_size=4, device="cpu",
                      progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 7), (7, 7)]  # 7 planes, one tile each, in batches of 4 across planes
    for z in range(7):
        single = restore(stack[z], model=tiny_restorer, tile_size=64, device="cpu")
        # the stack shares one intensity scaling; these floats are in [0, 1] so it is the identity
        np.testing.assert_allclose(batched[z], single, atol=1e-5)


def test_tzyx_progress_covers_whole_stack(tiny_restorer) -> None:
    stack = np.random.default_rng(1).random((2, 3, 70, 70)).astype(np.float32)
    calls = []
    restore(stack, model=tiny_restorer, tile_size=48, tile_overlap=8, batch_size=5, device="cpu",
            progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (2 * 3 * 4, 2 * 3 * 4)


@pytest.mark.timeout(240)
def test_distributed_cluster_loads_the_model_once_per_worker(tmp_path, restorer_file) -> None:
    """dask.distributed LocalCluster, 2 worker processes: same result as in memory, one load per worker."""
    import dask.array as da
    from distributed import Client, LocalCluster

    from perceive_ir import api

    rng = np.random.default_rng(2)
    image = (rng.random((4, 96, 96)) * 1000).astype(np.uint16)
    expected = restore(image, model=restorer_file, tile_size=64, tile_overlap=16, device="cpu")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        lazy = restore(da.from_array(image, chunks=(1, 96, 96)), model=restorer_file, tile_size=64,
                       tile_overlap=16, device="cpu")
        target = tmp_path / "out.zarr"
        lazy.to_zarr(str(target))
        loads = client.run(lambda: api._cached_restorer.cache_info().misses)
    import zarr

    result = np.asarray(zarr.open_array(str(target), mode="r"))
    assert result.dtype == np.uint16
    assert np.abs(result.astype(int) - expected.astype(int)).max() <= 2
    assert sorted(loads.values()) in ([1, 1], [0, 1])  # each worker that ran a task loaded the model once


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torch_compile_path_matches_eager(tiny_restorer) -> None:
    image = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    eager = restore(image, model=tiny_restorer, tile_size=32, tile_overlap=8, device="cpu")
    compiled = restore(image, model=tiny_restorer, tile_size=32, tile_overlap=8, device="cpu", compile=True)
    np.testing.assert_allclose(compiled, eager, atol=1e-4)


def test_wide_image_band_memory_is_a_few_row_bands(tiny_gray_restorer) -> None:
    """While tiles stream, numpy holds the accumulator's two row bands, one finished band and its
    cast to the output dtype: scaling back, rounding and clipping happen in place (a 16k-wide
    slide otherwise needs several extra bands)."""
    import tracemalloc

    image = (np.random.default_rng(0).random((192, 16384)) * 4000).astype(np.uint16)
    tracemalloc.start()
    try:
        steps = restore_steps(image, model=tiny_gray_restorer, tile_size=64, tile_overlap=16, device="cpu")
        next(steps)  # intensity sampling and the first batch done; the accumulator exists
        tracemalloc.reset_peak()
        result = [step for step in steps][-1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    band = 64 * image.shape[1] * 4  # one float32 row band of tiles
    assert result.shape == image.shape and result.dtype == np.uint16
    assert peak - result.nbytes < 4 * band, f"{(peak - result.nbytes) / band:.1f} row bands"
