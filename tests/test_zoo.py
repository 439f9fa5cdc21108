"""Weights files: self-describing safetensors, checksums, clear errors, no pickle."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import tiny_restorer_config
from perceive_ir import zoo
from perceive_ir.models import Restorer
from perceive_ir.zoo import WeightsError, load_perceiver, load_restorer, save_weights


def test_save_and_load_restorer_roundtrip(tmp_path, tiny_restorer) -> None:
    path = tmp_path / "r.safetensors"
    digest = save_weights(tiny_restorer, path, card={"training": "none"})
    assert digest == zoo.sha256sum(path) and len(digest) == 64
    loaded = load_restorer(path)
    assert loaded.config.to_dict() == json.loads(json.dumps(tiny_restorer.config.to_dict()))
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.allclose(loaded(x), tiny_restorer(x), atol=1e-6)
    assert json.loads(path.with_suffix(".json").read_text()) == {"training": "none"}
    assert zoo.load_model_card(path) == {"training": "none"}
    assert not list(tmp_path.glob("*.tmp"))


def test_float16_storage_halves_the_file(tmp_path, tiny_perceiver) -> None:
    full = tmp_path / "p32.safetensors"
    half = tmp_path / "p16.safetensors"
    save_weights(tiny_perceiver, full)
    save_weights(tiny_perceiver, half, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_perceiver(half)
    assert loaded.ctx.dtype == torch.float32
    assert torch.allclose(loaded.ctx, tiny_perceiver.ctx, atol=1e-3)


def test_kind_mismatch_is_refused(restorer_file, perceiver_file) -> None:
    with pytest.raises(WeightsError, match="holds a restorer, expected a perceiver"):
        load_perceiver(restorer_file)
    with pytest.raises(WeightsError, match="holds a perceiver, expected a restorer"):
        load_restorer(perceiver_file)


def test_truncated_file_names_the_file(tmp_path, restorer_file) -> None:
    broken = tmp_path / "broken.safetensors"
    data = open(restorer_file, "rb").read()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="broken.safetensors"):
        load_restorer(broken)


def test_garbage_file(tmp_path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_restorer(path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_restorer(tmp_path / "nothing.safetensors")


def test_foreign_safetensors_file(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="not a perceive-ir model"):
        load_restorer(path)


def test_config_weights_mismatch_names_tensors(tmp_path) -> None:
    """A file whose config says width 8 but whose tensors are width 16."""
    from safetensors.torch import save_file

    wide = Restorer(tiny_restorer_config(backbone_args=dict(width=16, encoder_blocks=(1, 1), latent_blocks=1,
                                                             decoder_blocks=(1, 1))))
    narrow_config = tiny_restorer_config()
    path = tmp_path / "mismatch.safetensors"
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(path),
              metadata={"perceive_ir.kind": "restorer", "perceive_ir.config": json.dumps(narrow_config.to_dict())})
    with pytest.raises(WeightsError, match=r"mismatch.safetensors.*do not match their config.*shape mismatch"):
        load_restorer(path)


def test_registered_model_checksum(tmp_path, monkeypatch, restorer_file) -> None:
    """A zoo entry whose file does not match its sha256 is refused; the right sum loads."""
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(zoo, "ZOO_FILE", tmp_path / "zoo.json")
    shutil.copy(restorer_file, tmp_path / "tiny.v1.safetensors")
    zoo.register("tiny.v1", "restorer", "tiny.v1.safetensors", "0" * 64, "test entry")
    with pytest.raises(WeightsError, match=r"checksum mismatch for .*tiny.v1.safetensors': expected sha256 0{64}, got [0-9a-f]{64}"):
        load_restorer("tiny.v1")
    zoo.register("tiny.v1", "restorer", "tiny.v1.safetensors", zoo.sha256sum(restorer_file), "test entry")
    assert isinstance(load_restorer("tiny.v1"), Restorer)
    assert [e.name for e in zoo.list_models("restorer")] == ["tiny.v1"]
    with pytest.raises(WeightsError, match="is a restorer, not a perceiver"):
        load_perceiver("tiny.v1")


def test_unknown_name_suggests_closest(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(zoo, "ZOO_FILE", tmp_path / "zoo.json")
    zoo.register("compact-allinone.v1", "restorer", "x.safetensors", "0" * 64)
    with pytest.raises(KeyError, match="Did you mean 'compact-allinone.v1'"):
        load_restorer("compact-allinone.v2")


def test_unbundled_model_says_how_to_get_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(zoo, "ZOO_FILE", tmp_path / "zoo.json")
    zoo.register("later.v1", "restorer", "later.v1.safetensors", "0" * 64)
    with pytest.raises(WeightsError, match="not bundled.*training/run.py"):
        load_restorer("later.v1")


def test_bundled_zoo_table_is_consistent() -> None:
    """Every bundled file matches its registered checksum and loads."""
    for entry in zoo.list_models():
        if entry.available:
            assert zoo.sha256sum(entry.path) == entry.sha256, entry.name
            loader = load_restorer if entry.kind == "restorer" else load_perceiver
            loader(entry.name)


def test_bundled_default_restores_the_demo_sample() -> None:
    """The shipped weights are trained, not random: the `make demo` sample gains > 8 dB (measured 20.3 -> 31.6)."""
    from pathlib import Path

    import numpy as np
    import tifffile

    from perceive_ir import restore

    samples = Path(__file__).resolve().parents[1] / "sample_data"
    degraded = tifffile.imread(samples / "fluorescence_degraded.tif")
    clean = tifffile.imread(samples / "fluorescence_clean.tif")
    # a centre crop keeps the test fast; the model sees it as it would the whole image
    window = tuple(slice(max(0, (n - 256) // 2), max(0, (n - 256) // 2) + 256) for n in degraded.shape)
    degraded, clean = degraded[window], clean[window]
    restored = restore(degraded, model="default", device="cpu", out_dtype="float32")

    def squared_error(image: np.ndarray) -> float:
        return float(np.mean((image.astype(np.float64) - clean.astype(np.float64)) ** 2))

    gain_db = 10 * np.log10(squared_error(degraded) / squared_error(restored))  # PSNR gain, any data range
    assert gain_db > 8.0


def test_no_pickle_in_package() -> None:
    """Weights are never unpickled: no torch.load without weights_only=True in the package."""
    import pathlib
    import re

    import perceive_ir

    root = pathlib.Path(perceive_ir.__file__).parent
    for source in root.rglob("*.py"):
        for line in source.read_text().splitlines():
            if re.search(r"torch\.load\(", line):
                assert "weights_only=True" in line, f"{source}: {line.strip()}"
            assert "pickle.load" not in line, f"{source}: {line.strip()}"
