"""Tests of the training pipeline (training/run.py): tiny runs on CPU.

The smoke run and the paper-layout run use tiny models and a handful of steps; the
built-in data need /work/shared/datasets (skipped elsewhere).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TRAINING = Path(__file__).resolve().parents[1] / "training"
sys.path.insert(0, str(TRAINING))

import configs  # noqa: E402
import data  # noqa: E402
import losses  # noqa: E402
import run  # noqa: E402

from perceive_ir import synthetic  # noqa: E402
from perceive_ir.models import tiny_clip_config  # noqa: E402

from conftest import load_benchmark  # noqa: E402

HAVE_DATASETS = (data.DATASETS_DIR / "bsd400").is_dir() and (data.DATASETS_DIR / "cbsd432").is_dir()
needs_datasets = pytest.mark.skipif(not HAVE_DATASETS, reason=f"no training datasets under {data.DATASETS_DIR}")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_log(folder: Path) -> list[dict[str, str]]:
    with open(folder / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# -- configs, data, losses ---------------------------------------------------------------
def test_configs_resolve_and_reject_unknown_names():
    smoke = configs.resolve_config("smoke")
    assert smoke.name == "smoke" and smoke.steps == 8
    assert configs.resolve_config("compact").clip_config == tiny_clip_config()
    paper = configs.resolve_config("paper-5task")
    assert paper.backbone_args["blocks"] == [4, 6, 6, 8] and paper.lr == 2e-4 and paper.crop_size == 256
    assert configs.config_from_dict(paper.to_dict()) == paper
    with pytest.raises(ValueError, match="Did you mean 'smoke'"):
        configs.resolve_config("smok")
    with pytest.raises(ValueError, match="unknown config fields"):
        configs.resolve_config("smoke", bogus=1)


def test_microscopy_task_uses_the_package_generator():
    # the training data draw from perceive_ir.synthetic (shared with the napari samples)
    assert data.synth_fluorescence is synthetic.synth_fluorescence
    assert data.degrade_fluorescence is synthetic.degrade_fluorescence
    task = data.MicroscopyTask("microscopy", count=4, seed=5)
    degraded, clean = task.region(2, 48, np.random.default_rng(0))
    expected_clean = synthetic.synth_fluorescence((48, 48), rng=np.random.default_rng([5, 2]))
    expected_degraded = synthetic.degrade_fluorescence(expected_clean, rng=np.random.default_rng(0))
    assert clean.shape == degraded.shape == (48, 48, 3)
    np.testing.assert_array_equal(clean[..., 0], expected_clean)
    np.testing.assert_array_equal(degraded[..., 1], expected_degraded)


def test_microscopy_regions_are_windows_of_larger_fields():
    task = data.MicroscopyTask("microscopy", count=6, seed=5, max_zoom=3.0)
    sides = []
    for index in range(6):
        degraded, clean = task.region(index, 40, np.random.default_rng(index))
        assert clean.shape == degraded.shape == (40, 40, 3)
        zoom = np.exp(np.random.default_rng([5, index, 1]).uniform(0.0, np.log(3.0)))
        side = max(40, int(round(40 * zoom)))
        field = synthetic.synth_fluorescence((side, side), rng=np.random.default_rng([5, index]))
        windows = np.lib.stride_tricks.sliding_window_view(field, (40, 40))
        matches = np.all(windows == clean[..., 0], axis=(2, 3))
        assert matches.sum() == 1, index  # the clean region is one window of the image's field
        sides.append(side)
    assert min(sides) < 60 < max(sides) <= 120  # zooms spread over [1, 3]
    assert configs.resolve_config("compact").microscopy_zoom == 3.0
    with pytest.raises(ValueError, match="microscopy_zoom must be >= 1"):
        configs.resolve_config("smoke", microscopy_zoom=0.5)


def test_info_nce_prefers_matching_crops():
    generator = torch.Generator().manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    tasks = torch.tensor([0, 1, 2, 0, 1, 2])
    matched = losses.info_nce(query, query, tasks)
    shuffled = losses.info_nce(query, query.roll(1, dims=0), tasks)
    assert matched < shuffled


def test_dpl_is_zero_at_the_ground_truth_and_grows_away_from_it():
    features = losses.RandomFeaturePyramid()
    clean = torch.rand(2, 3, 32, 32)
    degraded = clean + 0.2 * torch.randn_like(clean)
    weights = torch.full((2, 1), 1.25)
    at_truth = losses.difficulty_adaptive_perceptual_loss(features, clean, clean, degraded, [clean * 0.9], weights)
    halfway = losses.difficulty_adaptive_perceptual_loss(features, (clean + degraded) / 2, clean, degraded, [clean * 0.9], weights)
    assert at_truth.item() == pytest.approx(0.0, abs=1e-6) and halfway.item() > 0.05


def test_frequency_loss_is_zero_at_the_target_and_does_not_depend_on_the_crop_size():
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 48, 48, generator=generator)
    assert losses.frequency_l1(clean, clean).item() == 0.0
    # orthonormal spectrum: white noise of one level costs the same at any crop size
    error = 0.1 * torch.randn(2, 3, 96, 96, generator=generator)
    small = losses.frequency_l1(clean[..., :24, :24] + error[..., :24, :24], clean[..., :24, :24])
    large = losses.frequency_l1(torch.nn.functional.interpolate(clean, 96) + error, torch.nn.functional.interpolate(clean, 96))
    assert small.item() == pytest.approx(large.item(), rel=0.05)
    gradient = torch.zeros_like(clean, requires_grad=True)
    losses.frequency_l1(clean + gradient, clean + 0.05).backward()
    assert torch.isfinite(gradient.grad).all() and gradient.grad.abs().sum() > 0


def test_a_log_written_before_a_column_was_added_is_rewritten_under_the_new_header(tmp_path):
    old_columns = [c for c in run.LOG_COLUMNS if c != "frequency"]
    with open(tmp_path / "log.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(old_columns)
        writer.writerow([{"step": 5, "phase": "restorer", "l1": 0.5, "seconds": 9}.get(c, "") for c in old_columns])
    log = run.TrainingLog(tmp_path, enabled=True)
    log.write(step=6, phase="restorer", l1=0.25, frequency=0.125, seconds=10)
    rows = read_log(tmp_path)
    assert list(rows[0]) == list(run.LOG_COLUMNS)
    assert [(r["step"], r["l1"], r["frequency"], r["seconds"]) for r in rows] == [("5", "0.5", "", "9"), ("6", "0.25", "0.125", "10")]
    log.plot()
    assert (tmp_path / "log.png").stat().st_size > 1000


def test_a_checkpoint_saved_twice_is_the_same_bytes(tmp_path):
    # the archive must not carry the random temporary file's name: an unchanged stage-1
    # checkpoint re-written by every ship would otherwise show as a change in git
    payload = {"step": 3, "config": {"name": "x"}, "models": {"net": {"w": torch.arange(6.0).reshape(2, 3)}}}
    run.save_checkpoint(tmp_path / "a.pt", payload)
    run.save_checkpoint(tmp_path / "b" / "a.pt", run.load_checkpoint(tmp_path / "a.pt"))
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "a.pt").read_bytes()
    assert torch.equal(run.load_checkpoint(tmp_path / "b" / "a.pt")["models"]["net"]["w"], payload["models"]["net"]["w"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.pt", "a.pt", "b"]  # no temporary left behind


def test_folder_pairs_are_matched_by_the_fields_naming(tmp_path):
    _write_paper_layout(tmp_path, count=3)
    pairs = data._match_pairs(tmp_path / "Train" / "Derain" / "rainy", tmp_path / "Train" / "Derain" / "gt")
    assert [(a.name, b.name) for a, b in pairs][:1] == [("rain-0.png", "norain-0.png")]
    pairs = data._match_pairs(tmp_path / "Train" / "Dehaze" / "hazy", tmp_path / "Train" / "Dehaze" / "clear")
    assert [(a.name, b.name) for a, b in pairs][:1] == [("0000_0.8_0.2.png", "0000.png")]


# -- end-to-end runs -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, dict]:
    if not HAVE_DATASETS:
        pytest.skip(f"no training datasets under {data.DATASETS_DIR}")
    folder = tmp_path_factory.mktemp("smoke")
    torch.set_num_threads(1)
    result = run.main(["--config", "smoke", "--out", str(folder)])
    return folder, result


@needs_datasets
def test_smoke_run_writes_checkpoints_logs_and_plot(smoke_run):
    folder, result = smoke_run
    assert result["restorer_step"] == 8
    for phase in run.PHASES:
        state = run.load_checkpoint(folder / f"{phase}.pt")
        assert state["config"]["name"] == "smoke" and state["config"] == configs.resolve_config("smoke").to_dict()
        assert state["step"] > 0 and state["phase"] == phase
    rows = read_log(folder)
    assert list(rows[0]) == list(run.LOG_COLUMNS)
    restorer_rows = [r for r in rows if r["phase"] == "restorer"]
    for column in ("l1", "info_nce", "clip", "dpl", "frequency", "lr", "seconds"):
        assert all(np.isfinite(float(r[column])) for r in restorer_rows), column
    assert any(r["psnr"] for r in restorer_rows)
    assert 0.0 <= result["perceiver_accuracy"]["accuracy"] <= 1.0
    assert (folder / "log.png").stat().st_size > 1000


@needs_datasets
def test_resume_continues_an_interrupted_phase(smoke_run, tmp_path):
    folder, _ = smoke_run
    for phase in run.PHASES:
        state = run.load_checkpoint(folder / f"{phase}.pt")
        if phase == "restorer":  # pretend the run stopped half-way
            state["step"] = 4
        run.save_checkpoint(tmp_path / f"{phase}.pt", state)
    result = run.main(["--config", "ignored-on-resume", "--out", str(tmp_path), "--resume"])
    assert result["restorer_step"] == 8
    rows = [r for r in read_log(tmp_path) if r["phase"] == "restorer"]
    assert [int(r["step"]) for r in rows] == [6, 8]
    assert run.load_checkpoint(tmp_path / "restorer.pt")["history"] == []
    # continuing with changed settings: the checkpoint records what changed and from which step
    smoke_lr = configs.resolve_config("smoke").lr
    result = run.main(["--out", str(tmp_path), "--resume", "--override", "steps=10", "--override", "dpl_weight=0",
                       "--override", f"lr={smoke_lr / 2}"])
    assert result["restorer_step"] == 10
    state = run.load_checkpoint(tmp_path / "restorer.pt")
    history = state["history"]
    assert [entry["step"] for entry in history] == [8]
    assert history[0]["changed"] == {"dpl_weight": [0.1, 0], "lr": [smoke_lr, smoke_lr / 2], "steps": [8, 10]}
    # the new rate is used, not the one stored with the optimizer's moments
    assert [group["base_lr"] for group in state["optimizer"]["param_groups"]] == [smoke_lr / 2]
    rows = [r for r in read_log(tmp_path) if r["phase"] == "restorer"]
    assert float(rows[-1]["dpl"]) == 0.0 and float(rows[-2]["dpl"]) > 0.0
    # continuing with an added task: stage 1 is kept, the proxies apply only to the tasks they were trained on
    smoke_tasks = list(configs.resolve_config("smoke").tasks)
    result = run.main(["--out", str(tmp_path), "--resume", "--override", "steps=12", "--override", "dpl_weight=0.1",
                       "--override", f"tasks={json.dumps(smoke_tasks + ['poisson'])}"])
    assert result["restorer_step"] == 12
    state = run.load_checkpoint(tmp_path / "restorer.pt")
    assert state["history"][-1]["changed"]["tasks"] == [smoke_tasks, smoke_tasks + ["poisson"]]
    assert state["metrics"]["proxy_task_mask"] == {**{task: [1.0, 1.0] for task in smoke_tasks}, "poisson": [0.0, 0.0]}
    assert state["beta"].shape == (2, len(smoke_tasks) + 1) and len(state["metrics"]["probe_psnr"]) == len(smoke_tasks) + 1
    assert run.load_checkpoint(tmp_path / "medium0.pt")["config"]["tasks"] == smoke_tasks
    with pytest.raises(SystemExit, match="--resume"):
        run.main(["--config", "smoke", "--out", str(tmp_path)])


@needs_datasets
def test_ship_writes_registered_weights_with_model_cards(smoke_run, tmp_path, monkeypatch, capsys):
    from perceive_ir import zoo

    folder, _ = smoke_run
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(zoo, "ZOO_FILE", tmp_path / "weights" / "zoo.json")
    monkeypatch.setattr(run, "RESUME_CHECKPOINTS", tmp_path / "checkpoints")
    result = run.main(["--out", str(folder), "--ship"])
    table = json.loads((tmp_path / "weights" / "zoo.json").read_text())
    restorer_file = tmp_path / "weights" / f"{zoo.DEFAULT_RESTORER}.safetensors"
    assert table[zoo.DEFAULT_RESTORER]["sha256"] == zoo.sha256sum(restorer_file)
    card = json.loads(restorer_file.with_suffix(".json").read_text())
    assert set(card["metrics"]) >= {"set12_sigma15", "set12_sigma25", "set12_sigma50"}
    assert card["phases"]["restorer"]["steps"] == 8
    perceiver_card = json.loads((tmp_path / "weights" / f"{zoo.DEFAULT_PERCEIVER}.json").read_text())
    assert "accuracy" in perceiver_card["metrics"]["held_out_three_tier_accuracy"]
    model = zoo.load_restorer(restorer_file)
    assert model(torch.rand(1, 3, 24, 24)).shape == (1, 3, 24, 24)
    assert zoo.load_perceiver(tmp_path / "weights" / f"{zoo.DEFAULT_PERCEIVER}.safetensors").probabilities(
        torch.rand(2, 3, 32, 32)).shape == (2, 3)
    seed = run.load_checkpoint(tmp_path / "checkpoints" / "smoke" / "restorer.pt")
    assert seed["step"] == 8 and "optimizer" not in seed and result["shipped"]["restorer"] == str(restorer_file)
    # shipped models are never replaced unless asked: not by --ship, not by a run that ships at its end
    shipped = restorer_file.read_bytes()
    with pytest.raises(SystemExit, match="already shipped.*--overwrite"):
        run.main(["--out", str(folder), "--ship"])
    result = run.main(["--out", str(folder), "--resume", "--override", "ship=true"])
    assert "shipped" not in result and restorer_file.read_bytes() == shipped
    assert "not shipped" in capsys.readouterr().out
    result = run.main(["--out", str(folder), "--ship", "--overwrite"])
    assert result["shipped"]["restorer"] == str(restorer_file)
    # --ship never trains: a stage 2 stopped before its budget is refused with the way out
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for phase in run.PHASES:
        state = run.load_checkpoint(folder / f"{phase}.pt")
        if phase == "restorer":
            state["step"], state["done"] = 5, False
        run.save_checkpoint(unfinished / f"{phase}.pt", state)
    with pytest.raises(SystemExit, match="never trains.*step 5 of 8.*--override"):
        run.main(["--out", str(unfinished), "--ship", "--restorer-name", "smoke-restorer.v8"])
    assert run.load_checkpoint(unfinished / "restorer.pt")["step"] == 5
    # named versions, and a perceiver trained in another run folder
    other = tmp_path / "longer-perceiver"
    other.mkdir()
    for phase in ("medium0", "medium1", "perceiver"):
        state = run.load_checkpoint(folder / f"{phase}.pt")
        if phase == "perceiver":  # as if fine-tuned there with other crop sizes
            state["step"] = 99
            state["config"] = dict(state["config"], perceiver_crop_max=40, perceiver_init_from="smoke-perceiver.v1")
        run.save_checkpoint(other / f"{phase}.pt", state)
    run.main(["--out", str(folder), "--ship", "--restorer-name", "smoke-restorer.v9", "--perceiver-name",
              "smoke-perceiver.v9", "--perceiver-from", str(other)])
    table = json.loads((tmp_path / "weights" / "zoo.json").read_text())
    assert {"smoke-restorer.v9", "smoke-perceiver.v9", zoo.DEFAULT_RESTORER} <= set(table)
    card = json.loads((tmp_path / "weights" / "smoke-perceiver.v9.json").read_text())
    assert card["steps"] == 99 and card["trained_in"] == str(other)
    assert card["config"]["perceiver_crop_max"] == 40  # the perceiver's own settings, not the restorer run's
    assert "fine-tuned from smoke-perceiver.v1" in card["training"] and "crops of 32 to 40 px" in card["training"]
    restorer_card = json.loads((tmp_path / "weights" / "smoke-restorer.v9.json").read_text())
    assert "(6 steps)" in restorer_card["perceiver_in_training"]
    with pytest.raises(SystemExit, match="--perceiver-from"):
        run.main(["--out", str(folder), "--resume", "--perceiver-from", str(other)])
    # the restorer alone: the zoo's perceivers stay as they were
    perceiver_file = tmp_path / "weights" / "smoke-perceiver.v9.safetensors"
    before = perceiver_file.read_bytes()
    result = run.main(["--out", str(folder), "--ship", "--restorer-only", "--restorer-name", "smoke-restorer.v10",
                       "--perceiver-name", "smoke-perceiver.v9"])
    assert result["shipped"]["perceiver"] is None and perceiver_file.read_bytes() == before
    table = json.loads((tmp_path / "weights" / "zoo.json").read_text())
    assert table["smoke-perceiver.v9"]["sha256"] == zoo.sha256sum(perceiver_file) and "smoke-restorer.v10" in table
    restorer_card = json.loads((tmp_path / "weights" / "smoke-restorer.v10.json").read_text())
    assert restorer_card["losses"] == "L1 + 0.1 InfoNCE(CFE, tau 0.1) + 0.05 L_clip(frozen stage-1 perceiver) + 0.1 L_dpl + 0.1 L1(FFT)"
    assert restorer_card["training_history"] == []
    assert "--ship" in restorer_card["shipping_command"] and "training_command" not in restorer_card
    with pytest.raises(SystemExit, match="choose one"):
        run.main(["--out", str(folder), "--ship", "--restorer-only", "--perceiver-from", str(other)])


def test_loss_description_names_the_terms_in_use():
    config = configs.resolve_config("smoke", clip_weight=0.0, dpl_weight=0.0, frequency_weight=0.0)
    assert run.loss_description(config) == "L1 + 0.1 InfoNCE(CFE, tau 0.1)"
    config = configs.resolve_config("compact", clip_weight=0.0, dpl_weight=0.0, frequency_weight=1.0)
    assert run.loss_description(config) == "L1 + 0.1 InfoNCE(CFE, tau 0.1) + L1(FFT)"
    config = configs.resolve_config("compact", clip_weight=0.0, dpl_weight=0.0, teacher="runs/h1", teacher_weight=1.0)
    assert run.loss_description(config) == "L1 + 0.1 InfoNCE(CFE, tau 0.1) + L1(teacher runs/h1 on noise)"
    assert run.config_changes({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == {"b": [2, 3], "c": [None, 4]}


# -- the paper's data layout --------------------------------------------------------------
def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)


def _write_paper_layout(root: Path, count: int = 4, size: int = 64) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        clean = rng.random((size, size, 3)).astype(np.float32) * 0.5 + 0.25
        worse = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
        _save_png(root / "Train" / "Denoise" / f"{index:04d}.png", clean)
        _save_png(root / "Train" / "Derain" / "rainy" / f"rain-{index}.png", worse)
        _save_png(root / "Train" / "Derain" / "gt" / f"norain-{index}.png", clean)
        _save_png(root / "Train" / "Dehaze" / "hazy" / f"{index:04d}_0.8_0.2.png", worse)
        _save_png(root / "Train" / "Dehaze" / "clear" / f"{index:04d}.png", clean)
        _save_png(root / "GoPro" / "train" / f"scene{index % 2}" / "blur" / f"{index:06d}.png", worse)
        _save_png(root / "GoPro" / "train" / f"scene{index % 2}" / "sharp" / f"{index:06d}.png", clean)
        _save_png(root / "LOL" / "our485" / "low" / f"{index}.png", worse * 0.2)
        _save_png(root / "LOL" / "our485" / "high" / f"{index}.png", clean)


TINY_PAPER_OVERRIDES = {
    "crop_size": 32, "region_size": 40, "batch_size": 5, "epoch_size": 10, "num_workers": 0,
    "medium_backbone_args": {"dim": 8, "blocks": [1, 1, 1, 1], "heads": [1, 1, 1, 1], "refinement_blocks": 1},
    "medium_steps": 2, "medium_batch_size": 5,
    "clip": None, "clip_config": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 2, "head_width": 16},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
    },
    "n_ctx": 2, "perceiver_crop": 32, "perceiver_steps": 2, "perceiver_batch_size": 5, "perceiver_eval_crops": 1,
    "backbone_args": {"dim": 8, "blocks": [1, 1, 1, 1], "heads": [1, 1, 1, 1], "refinement_blocks": 1},
    "embed_dim": 16,
    "semantic_args": {"model_name": "vit_small_patch14_dinov2", "depths": [0, 1, 2, 3], "image_size": 28,
                      "embed_dim": 32, "depth": 4, "num_heads": 2},
    "steps": 3, "warmup_steps": 1, "probe_crops": 1, "log_every": 1,
}


def test_paper_layout_tiny_run(tmp_path):
    _write_paper_layout(tmp_path / "data")
    overrides = [f"{key}={json.dumps(value)}" for key, value in TINY_PAPER_OVERRIDES.items()]
    arguments = ["--config", "paper-5task", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--device", "cpu"]
    for override in overrides:
        arguments += ["--override", override]
    result = run.main(arguments)
    assert result["restorer_step"] == 3
    state = run.load_checkpoint(tmp_path / "run" / "restorer.pt")
    assert state["config"]["backbone"] == "restormer" and state["config"]["semantic"] == "dinov2"
    assert state["config"]["tasks"] == list(configs.TASKS_5) and state["config"]["lr"] == 2e-4
    restorer_rows = [r for r in read_log(tmp_path / "run") if r["phase"] == "restorer"]
    assert len(restorer_rows) == 3 and all(np.isfinite(float(r["dpl"])) for r in restorer_rows)


def test_paper_layout_reports_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="Denoise"):
        data.build_tasks(configs.resolve_config("paper-3task", data_root=str(tmp_path)))
    with pytest.raises(SystemExit, match="--data-root"):
        run.main(["--config", "paper-3task", "--out", str(tmp_path / "run")])


# -- ablation --------------------------------------------------------------------------------
@needs_datasets
def test_ablation_trains_each_variant_on_the_same_stage1_and_prints_a_table(smoke_run, tmp_path, capsys):
    import ablate

    folder, _ = smoke_run
    out = tmp_path / "ablation"
    results = ablate.main(["--stage1", str(folder), "--minutes", "5", "--out", str(out), "--variants", "full", "plain"])
    assert list(results) == ["full", "plain"]
    for name, values in results.items():
        state = run.load_checkpoint(out / name / "restorer.pt")
        assert state["done"] and state["config"]["clock"] == "process" and values["steps"] == state["step"] == 8
        assert np.isfinite(values["set12_sigma25"])
        for stage1 in ablate.STAGE1:  # the same stage 1 for every variant
            assert run.load_checkpoint(out / name / stage1)["step"] == run.load_checkpoint(folder / stage1)["step"]
    full = run.load_checkpoint(out / "full" / "restorer.pt")["config"]
    plain = run.load_checkpoint(out / "plain" / "restorer.pt")["config"]
    assert (full["cfe"], full["sgm"], full["clip_weight"] > 0) == (True, True, True)
    assert (plain["cfe"], plain["sgm"], plain["clip_weight"], plain["dpl_weight"]) == (False, False, 0.0, 0.0)
    assert not any(key.startswith(("cfe.", "sgm.")) for key in plain_state_keys(out / "plain"))
    table = capsys.readouterr().out
    assert "| full |" in table and "| plain |" in table and json.loads((out / "ablation.json").read_text())["minutes"] == 5
    # a finished variant is not retrained
    before = (out / "full" / "restorer.pt").stat().st_mtime_ns
    ablate.main(["--stage1", str(folder), "--minutes", "5", "--out", str(out), "--variants", "full"])
    assert (out / "full" / "restorer.pt").stat().st_mtime_ns == before


def plain_state_keys(folder: Path) -> list[str]:
    return list(run.load_checkpoint(folder / "restorer.pt")["models"]["model"])


@needs_datasets
def test_load_run_rebuilds_every_model(smoke_run):
    folder, _ = smoke_run
    config, mediums, perceiver, restorer = run.load_run(folder)
    assert config.name == "smoke" and len(mediums) == 2 and restorer is not None
    x = torch.rand(1, 3, 32, 32)
    assert restorer(x).shape == x.shape and perceiver.probabilities(x).shape == (1, 3)
    assert not any(p.requires_grad for p in restorer.parameters())


@pytest.mark.skipif(not (data.DATASETS_DIR / "cbsd432").is_dir(), reason="needs ../shared/datasets (CBSD432 held-out crops)")
def test_held_out_benchmarks_read_the_restorer_of_a_run_folder(smoke_run, tmp_path):
    from perceive_ir.zoo import save_weights

    folder, _ = smoke_run
    module = load_benchmark("motion_blur")
    from_run = module.main(["--run", str(folder), "--images", "1", "--lengths", "5"])
    exported = tmp_path / "exported.safetensors"
    save_weights(run.load_run(folder)[3], exported, card={})
    from_file = module.main(["--model", str(exported), "--images", "1", "--lengths", "5"])
    quality = lambda row: {k: v for k, v in row.items() if not k.startswith("seconds")}  # noqa: E731  (times vary)
    assert quality(from_run[5.0]) == pytest.approx(quality(from_file[5.0]), abs=1e-3)
    stage1_only = tmp_path / "stage1-only"
    run.copy_stage1(folder, stage1_only)
    with pytest.raises(SystemExit, match="no stage-2 checkpoint"):
        module.main(["--run", str(stage1_only), "--images", "1"])


@needs_datasets
def test_interpolated_restorer_is_the_weighted_mean_and_is_never_shipped(smoke_run, tmp_path):
    import interpolate

    folder, _ = smoke_run
    other = tmp_path / "other"
    run.copy_stage1(folder, other)
    state = run.load_checkpoint(folder / "restorer.pt")
    trained = state["models"]["model"]
    state["models"]["model"] = {k: v + 1.0 if v.is_floating_point() else v for k, v in trained.items()}
    run.save_checkpoint(other / "restorer.pt", state)
    out = interpolate.main([str(other), str(folder), "--alpha", "0.25", "--out", str(tmp_path / "mix")])
    mixed = run.load_checkpoint(out / "restorer.pt")
    assert mixed["interpolated"]["alpha"] == 0.25 and "optimizer" not in mixed
    for name, tensor in trained.items():
        expected = tensor + 0.25 if tensor.is_floating_point() else tensor
        assert torch.allclose(mixed["models"]["model"][name].float(), expected.float(), atol=1e-3), name
    assert run.load_run(out)[3] is not None  # evaluate.py --run reads it like a trained folder
    with pytest.raises(SystemExit, match="weight interpolation"):
        run.main(["--out", str(out), "--ship", "--restorer-name", "smoke-restorer.v99"])
    with pytest.raises(SystemExit, match="exists"):
        interpolate.main([str(other), str(folder), "--alpha", "0.5", "--out", str(out)])
    with pytest.raises(ValueError, match="alpha"):
        interpolate.interpolate(trained, trained, 1.5)
    narrower = {k: v[..., :1] if v.ndim > 1 else v for k, v in trained.items()}
    with pytest.raises(ValueError, match="shape"):
        interpolate.interpolate(narrower, trained, 0.5)


def test_bf16_autocast_follows_amp_on_cuda_and_cpu_amp_on_cpu():
    cpu, cuda = run.Runtime(torch.device("cpu")), run.Runtime(torch.device("cuda"))
    default = configs.resolve_config("smoke")
    assert default.amp and not default.cpu_amp  # float32 on CPU unless asked, as runs before the field
    assert run.amp_enabled(cuda, default) and not run.amp_enabled(cpu, default)
    assert not run.amp_enabled(cuda, configs.resolve_config("smoke", amp=False))
    assert run.amp_enabled(cpu, configs.resolve_config("smoke", cpu_amp=True))
    layer = torch.nn.Conv2d(3, 4, 3)
    with run.autocast(cpu, configs.resolve_config("smoke", cpu_amp=True)):
        assert layer(torch.rand(1, 3, 8, 8)).dtype == torch.bfloat16
    with run.autocast(cpu, default):
        assert layer(torch.rand(1, 3, 8, 8)).dtype == torch.float32


@needs_datasets
def test_a_stage_2_trains_under_cpu_bf16_autocast(smoke_run, tmp_path):
    folder, _ = smoke_run
    result = run.main(["--out", str(tmp_path / "bf16"), "--branch", str(folder), "--override", "steps=2",
                       "--override", "cpu_amp=true"])
    assert result["restorer_step"] == 2
    rows = [row for row in csv.DictReader((tmp_path / "bf16" / "log.csv").open()) if row["phase"] == "restorer"]
    assert rows and all(np.isfinite(float(row["loss"])) for row in rows)
    state = run.load_checkpoint(tmp_path / "bf16" / "restorer.pt")
    assert state["config"]["cpu_amp"] is True
    assert all(v.dtype == torch.float32 for v in state["models"]["model"].values() if v.is_floating_point())


@needs_datasets
def test_train_step_benchmark_times_both_precisions(smoke_run, capsys):
    folder, _ = smoke_run
    module = load_benchmark("train_step")
    before = {k: v.clone() for k, v in run.load_checkpoint(folder / "restorer.pt")["models"]["model"].items()}
    results = module.main(["--run", str(folder), "--repeats", "1", "--batch", "2"])
    assert results["float32_s"] > 0 and results["bf16_s"] > 0
    assert 20 < results["bf16_vs_float32_psnr_db"] < 200  # close, not identical: the bf16 pass really ran
    assert "| bf16 autocast (cpu_amp) |" in capsys.readouterr().out
    after = run.load_checkpoint(folder / "restorer.pt")["models"]["model"]  # the run folder is only read
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_process_clock_is_validated():
    assert configs.resolve_config("smoke", clock="process").clock == "process"
    with pytest.raises(ValueError, match="clock"):
        configs.resolve_config("smoke", clock="gpu")


def test_gray_sources_are_degraded_as_one_plane_like_gray_inputs_at_inference():
    # a gray image given to restore() is replicated to three identical channels; training
    # samples of gray sources must look the same (identical noise in every channel)
    gray = (np.arange(40 * 50, dtype=np.float64).reshape(40, 50) % 251).astype(np.uint8)
    colour = np.stack([gray, gray[::-1], gray[:, ::-1]], axis=-1)
    noise = data._noise_degradation((), (20.0, 30.0))
    task = data.SynthesizedTask("noise", [gray, colour], noise)
    degraded, clean = task.region(0, 32, np.random.default_rng(0))
    assert degraded.shape == clean.shape == (32, 32, 3)
    np.testing.assert_array_equal(degraded[..., 0], degraded[..., 2])
    np.testing.assert_array_equal(clean[..., 0], clean[..., 1])
    assert 15 / 255 < float(np.std(degraded - clean)) < 35 / 255
    # colour sources keep independent noise per channel
    degraded, clean = task.region(1, 32, np.random.default_rng(0))
    residual = degraded - clean
    assert abs(float(np.corrcoef(residual[..., 0].ravel(), residual[..., 1].ravel())[0, 1])) < 0.2
    # the old order (replicate, then degrade) stays available for comparison
    old = data.SynthesizedTask("noise", [gray], noise, gray_planes=False)
    degraded, _ = old.region(0, 32, np.random.default_rng(0))
    assert float(np.abs(degraded[..., 0] - degraded[..., 2]).max()) > 0.05
    # the config chooses, and built tasks follow it
    assert configs.resolve_config("smoke").gray_sources == "plane"
    with pytest.raises(ValueError, match="gray_sources"):
        configs.resolve_config("smoke", gray_sources="rgb")
    # checkpoints written before the field existed were trained on replicated-then-degraded gray
    stored = run.stored_config({"config": {k: v for k, v in configs.resolve_config("smoke").to_dict().items()
                                           if k != "gray_sources"}})
    assert stored["gray_sources"] == "replicated"
    assert run.config_changes(stored, configs.resolve_config("smoke").to_dict()) == {
        "gray_sources": ["replicated", "plane"]}


@needs_datasets
def test_built_in_tasks_follow_the_gray_sources_setting():
    bsd400 = len(data._list_images(data.DATASETS_DIR / "bsd400"))
    assert bsd400 > 0  # the first training images are BSD400's gray ones
    for setting, identical in (("plane", True), ("replicated", False)):
        config = configs.resolve_config("smoke", gray_sources=setting)
        for task in data.build_tasks(config, "train"):
            if task.name == "noise":
                degraded, _ = task.region(0, 32, np.random.default_rng(1))
                assert np.array_equal(degraded[..., 0], degraded[..., 1]) == identical


def test_init_from_grows_a_trained_restorer(smoke_run, tmp_path):
    folder, _ = smoke_run
    for phase in ("medium0", "medium1", "perceiver"):
        run.save_checkpoint(tmp_path / f"{phase}.pt", run.load_checkpoint(folder / f"{phase}.pt"))
    smoke_args = configs.resolve_config("smoke").backbone_args
    grown_args = json.dumps(dict(smoke_args, full_res_width=4, experts=2))
    source = folder / "restorer.pt"
    result = run.main(["--out", str(tmp_path), "--resume", "--stage", "2", "--override", f"init_from={json.dumps(str(source))}",
                       "--override", f"backbone_args={grown_args}", "--override", "color_head=true",
                       "--override", "steps=2"])
    assert result["restorer_step"] == 2
    state = run.load_checkpoint(tmp_path / "restorer.pt")
    provenance = state["initialised_from"]
    assert provenance["step"] == 8 and provenance["path"] == str(source)
    assert provenance["changed"]["backbone_args"][1]["full_res_width"] == 4
    assert any(name.startswith("backbone.full_res.") for name in provenance["added_parameters"])
    assert {"color.mlp.0", "color.mlp.2", "color.statistics", "router"} <= set(provenance["added_parameters"])
    assert any(name.startswith("backbone.encoder1.0.conv1") for name in provenance["added_parameters"])  # its experts
    assert provenance["initialised_from"] is None  # the smoke run was not grown itself
    # the weights that were there came from the source (trained 2 more steps at a small learning rate)
    before = run.load_checkpoint(source)["models"]["model"]
    after = state["models"]["model"]
    assert set(before) < set(after)
    assert all(torch.allclose(before[k].float(), after[k].float(), atol=0.05) for k in before)
    # a model that cannot hold the stored weights is refused, naming the problem
    other = tmp_path / "other"
    other.mkdir()
    for phase in ("medium0", "medium1", "perceiver"):
        run.save_checkpoint(other / f"{phase}.pt", run.load_checkpoint(folder / f"{phase}.pt"))
    wider = json.dumps(dict(smoke_args, width=12))
    with pytest.raises(ValueError, match="does not fit the new model"):
        run.main(["--out", str(other), "--resume", "--stage", "2", "--override", f"init_from={json.dumps(str(source))}",
                  "--override", f"backbone_args={wider}", "--override", "steps=2"])
    with pytest.raises(FileNotFoundError, match="no restorer checkpoint"):
        run.main(["--out", str(other), "--resume", "--stage", "2", "--override",
                  f"init_from={json.dumps(str(tmp_path / 'nowhere'))}", "--override", "steps=2"])


@needs_datasets
def test_branch_starts_stage_2_of_a_new_folder_from_a_trained_run(smoke_run, tmp_path):
    folder, _ = smoke_run
    source_config = run.stored_config(run.load_checkpoint(folder / "restorer.pt"))
    branch = tmp_path / "branch"
    result = run.main(["--out", str(branch), "--branch", str(folder), "--override", "steps=2",
                       "--override", "frequency_weight=0.5"])
    assert result["restorer_step"] == 2  # a fresh schedule: step 0 to 2, not the source's 8 continued
    for phase in ("medium0", "medium1", "perceiver"):  # the source's stage 1, as it was
        assert (branch / f"{phase}.pt").read_bytes() == (folder / f"{phase}.pt").read_bytes()
    state = run.load_checkpoint(branch / "restorer.pt")
    assert state["initialised_from"]["path"] == str(folder / "restorer.pt") and state["initialised_from"]["step"] == 8
    # the source restorer's config, with only what was asked changed
    changed = run.config_changes(source_config, run.stored_config(state))
    assert set(changed) == {"init_from", "steps", "frequency_weight"}
    assert state["initialised_from"]["changed"] == changed
    # the branch is continued with --resume; a second --branch into it is refused
    with pytest.raises(SystemExit, match="already holds a stage-2 checkpoint"):
        run.main(["--out", str(branch), "--branch", str(folder)])
    with pytest.raises(SystemExit, match="not with --resume"):
        run.main(["--out", str(tmp_path / "other"), "--branch", str(folder), "--resume"])
    stage1_only = tmp_path / "stage1-only"
    run.copy_stage1(folder, stage1_only)
    with pytest.raises(SystemExit, match="has no restorer.pt"):
        run.main(["--out", str(tmp_path / "other"), "--branch", str(stage1_only)])
    with pytest.raises(SystemExit, match="is not a run folder"):
        run.main(["--out", str(tmp_path / "other"), "--branch", str(tmp_path / "nowhere")])


@needs_datasets
def test_a_teacher_distils_its_tasks_into_the_restorer(smoke_run, tmp_path):
    folder, _ = smoke_run
    taught = tmp_path / "taught"
    result = run.main(["--out", str(taught), "--branch", str(folder), "--override", "steps=4",
                       "--override", "log_every=1", "--override", f"teacher={folder}",
                       "--override", "teacher_weight=2.0", "--override", 'teacher_tasks=["noise", "haze"]'])
    assert result["restorer_step"] == 4
    rows = [row for row in csv.DictReader((taught / "log.csv").open()) if row["phase"] == "restorer"]
    distill = [float(row["distill"]) for row in rows]
    # the branch starts as a copy of its teacher: no distance at the first step, then it moves away
    assert distill[0] < 1e-5 and max(distill[1:]) > 1e-5
    assert run.stored_config(run.load_checkpoint(taught / "restorer.pt"))["teacher_weight"] == 2.0
    # a branch of the taught run does not inherit the teacher (its folder may be gone); it may name one
    after = tmp_path / "after"
    run.main(["--out", str(after), "--branch", str(taught), "--override", "steps=1"])
    assert run.stored_config(run.load_checkpoint(after / "restorer.pt"))["teacher_weight"] == 0
    # without a teacher the term is not computed
    plain = tmp_path / "plain"
    run.main(["--out", str(plain), "--branch", str(folder), "--override", "steps=2", "--override", "log_every=1"])
    assert {row["distill"] for row in csv.DictReader((plain / "log.csv").open()) if row["phase"] == "restorer"} == {"0"}
    with pytest.raises(SystemExit, match="not a run folder with a trained restorer"):
        run.main(["--out", str(tmp_path / "nowhere"), "--branch", str(folder), "--override", "steps=1",
                  "--override", f"teacher={tmp_path / 'missing'}", "--override", "teacher_weight=1.0"])


def test_teacher_settings_are_validated():
    with pytest.raises(ValueError, match="needs a teacher"):
        configs.resolve_config("smoke", teacher_weight=1.0)
    with pytest.raises(ValueError, match="teacher_tasks must name tasks that are trained"):
        configs.resolve_config("smoke", teacher="runs/x", teacher_weight=1.0, teacher_tasks=["low_light"])
    with pytest.raises(ValueError, match="teacher_weight must be >= 0"):
        configs.resolve_config("smoke", teacher="runs/x", teacher_weight=-1.0)
    assert configs.resolve_config("smoke", teacher="runs/x").teacher_weight == 0  # loaded only when weighted


@needs_datasets
def test_backbone_probe_trains_each_variant_and_reports_set12(tmp_path, capsys):
    import backbone_probe

    out = tmp_path / "probe.json"
    results = backbone_probe.main(["--minutes", "0.02", "--crop", "32", "--batch", "4", "--json", str(out),
                                   "--variant", 'small={"width": 8, "latent_blocks": 1}',
                                   "--variant", 'small-full-res={"width": 8, "latent_blocks": 1, "full_res_width": 4}'])
    assert list(results) == ["small", "small-full-res"]
    assert results["small-full-res"]["parameters"] > results["small"]["parameters"]
    for values in results.values():
        assert values["steps"] >= 1 and values["s_per_mp"] > 0
        # barely trained: near the noisy input (24.7 / 20.4 / 14.8 dB), finite and ordered by noise level
        assert 10 < values["set12_50"] < values["set12_25"] < values["set12_15"] < 40
    printed = capsys.readouterr().out
    assert "| small-full-res |" in printed and "uniform crops" in printed
    assert json.loads(out.read_text())["variants"]["small"] == {"width": 8, "latent_blocks": 1}
    # per-image Set12 values (Barbara, image 09, has its own column) average to the reported mean
    for values in results.values():
        for sigma in (15, 25, 50):
            per_image = [v for k, v in values.items() if k.startswith(f"set12_{sigma}_")]
            assert len(per_image) == 12 and abs(np.mean(per_image) - values[f"set12_{sigma}"]) < 0.01
    detailed = backbone_probe.main(["--minutes", "0.02", "--crop", "32", "--batch", "4", "--detail-crops", "3",
                                    "--variant", 'small={"width": 8, "latent_blocks": 1}'])
    assert detailed["small"]["steps"] >= 1
    assert "the most detailed of 3 random crops" in capsys.readouterr().out
    gratings = backbone_probe.main(["--minutes", "0.02", "--crop", "32", "--batch", "4", "--grating-share", "0.5",
                                    "--variant", 'small={"width": 8, "latent_blocks": 1}'])
    assert gratings["small"]["steps"] >= 1
    assert "a grating added to 50% of them" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        backbone_probe.parse_arguments(["--variant", "a={}", "--grating-share", "1.5"])


def test_poisson_task_adds_signal_dependent_photon_noise_to_natural_images():
    # a left-to-right ramp: Poisson noise grows with the signal, Gaussian noise would not
    ramp = np.tile(np.linspace(20, 235, 64), (64, 1)).astype(np.uint8)
    task = data.SynthesizedTask("poisson", [ramp], data._kind_degradation("poisson"))
    residuals = [np.subtract(*task.region(0, 64, np.random.default_rng(seed))) for seed in range(8)]
    dark = np.std([r[:, :12, 0] for r in residuals])
    bright = np.std([r[:, -12:, 0] for r in residuals])
    assert bright > 1.4 * dark > 0  # measured 1.7 (clipping at white and read noise narrow it)
    assert "poisson" in configs.resolve_config("compact").tasks
    if HAVE_DATASETS:
        config = configs.resolve_config("smoke", tasks=("noise", "poisson"))
        assert [task.name for task in data.build_tasks(config, "train")] == ["noise", "poisson"]
    with pytest.raises(ValueError, match="expected noise, poisson"):
        data.build_tasks(configs.resolve_config("smoke", tasks=("photons",)), "train")


def test_micrograph_task_band_limits_the_clean_target_then_adds_photon_noise():
    rng = np.random.default_rng(0)
    texture = (rng.uniform(0, 255, (96, 96))).astype(np.uint8)  # pixel-level texture, as in a photograph
    task = data.SynthesizedTask("micrograph", [texture], data._kind_degradation("poisson"), prepare=data.random_band_limit)
    degraded, clean = task.region(0, 64, np.random.default_rng(1))
    roughness = lambda image: float(np.mean(np.abs(np.diff(image[..., 0], axis=1))))
    # the target is smooth: no pixel-level texture left (the texture is the same everywhere)
    assert roughness(clean) < 0.25 * roughness(texture[..., None] / 255.0)
    assert roughness(degraded) > 3 * roughness(clean)  # the input carries photon noise
    # blur acts in Y and X only: the channels of a colour source are not mixed
    colour = np.zeros((32, 32, 3), np.float32)
    colour[..., 1] = 1.0
    limited = data.band_limit(colour, 2.0, 0.5)
    assert np.allclose(limited[..., 1], 0.5, atol=1e-5) and np.allclose(limited[..., [0, 2]], 0.0)
    assert "micrograph" in configs.resolve_config("compact").tasks
    if HAVE_DATASETS:
        config = configs.resolve_config("smoke", tasks=("noise", "micrograph"))
        built = data.build_tasks(config, "train")
        assert [task.name for task in built] == ["noise", "micrograph"] and built[1].prepare is data.random_band_limit


def test_detail_crops_and_gratings_shape_the_training_regions_only():
    # left half flat, right half a fine checkerboard: with many candidates the region lands on
    # the textured half, with one candidate anywhere
    image = np.full((64, 256), 128, np.uint8)
    image[:, 128:] = np.where((np.add.outer(np.arange(64), np.arange(128)) % 2) == 0, 60, 200)
    identity = lambda clean, rng: clean
    assert data.detail(image[:, :128]) == 0.0 and data.detail(image[:, 128:]) == 280.0  # 140 across and down
    uniform = data.SynthesizedTask("noise", [image], identity)
    detailed = data.SynthesizedTask("noise", [image], identity, detail_candidates=8)
    texture_share = lambda task: np.mean([data.detail(task.region(0, 32, np.random.default_rng(seed))[1]) > 0.1
                                          for seed in range(40)])
    assert texture_share(detailed) == 1.0  # at least one of 8 windows of 32 px reaches the textured half
    assert 0.3 < texture_share(uniform) < 0.8
    with pytest.raises(ValueError, match="detail_candidates must be >= 1"):
        data.SynthesizedTask("noise", [image], identity, detail_candidates=0)
    assert configs.resolve_config("compact").detail_crops == 1
    with pytest.raises(ValueError, match="detail_crops must be >= 1"):
        configs.resolve_config("smoke", detail_crops=0)
    if HAVE_DATASETS:
        config = configs.resolve_config("smoke", tasks=("noise", "micrograph", "microscopy"), detail_crops=4)
        assert [getattr(t, "detail_candidates", None) for t in data.build_tasks(config, "train")] == [4, 4, None]
        assert [getattr(t, "detail_candidates", None) for t in data.build_tasks(config, "validation")] == [1, 1, None]
    # gratings: the share of clean regions that get one; none held out
    with_gratings = data.SynthesizedTask("noise", [np.full((64, 64), 128, np.uint8)], identity, grating_share=0.5)
    textured = [data.detail(with_gratings.region(0, 32, np.random.default_rng(seed))[1]) > 0 for seed in range(60)]
    assert 0.3 < np.mean(textured) < 0.7
    with pytest.raises(ValueError, match="grating_share must be in"):
        data.SynthesizedTask("noise", [image], identity, grating_share=1.5)
    with pytest.raises(ValueError, match="grating_share must be in"):
        configs.resolve_config("smoke", grating_share=-0.1)
    if HAVE_DATASETS:
        config = configs.resolve_config("smoke", tasks=("noise", "haze", "microscopy"), grating_share=0.25)
        assert [getattr(t, "grating_share", None) for t in data.build_tasks(config, "train")] == [0.25, 0.25, None]
        assert [getattr(t, "grating_share", None) for t in data.build_tasks(config, "validation")] == [0, 0, None]


def test_add_grating_adds_a_fine_oblique_texture_over_a_rectangle():
    flat = np.full((48, 64), 0.5, np.float32)
    for seed in range(20):
        out = data.add_grating(flat, np.random.default_rng(seed))
        assert out.shape == flat.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        changed = np.abs(out - flat) > 1e-6
        rows, columns = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
        # one rectangle, at least a third of each side (a few zero crossings of the sine aside)
        assert rows.size >= 48 // 3 - 2 and columns.size >= 64 // 3 - 2
        assert not changed[:rows.min()].any() and not changed[:, columns.max() + 1:].any()
        amplitude = np.abs(out - flat).max()
        assert data.GRATING_AMPLITUDE[0] * 0.8 < amplitude <= data.GRATING_AMPLITUDE[1] + 1e-6
        assert data.detail(out) > data.detail(flat)  # texture added
    colour = data.add_grating(np.full((32, 32, 3), 0.5, np.float32), np.random.default_rng(0))
    assert colour.shape == (32, 32, 3) and np.array_equal(colour[..., 0], colour[..., 2])


def test_task_weights_set_the_share_of_each_task_in_every_cycle():
    assert data.task_schedule(3) == [0, 1, 2]
    assert data.task_schedule(3, [2, 1, 3]) == [0, 1, 2, 0, 2, 2]
    tasks = [data.MicroscopyTask(name, count=2, seed=i) for i, name in enumerate(("a", "b"))]
    dataset = data.TaskBalancedDataset(tasks, 16, 16, 12, seed=0, weights=[3, 1])
    seen = [int(dataset[i]["task"]) for i in range(12)]
    assert seen.count(0) == 9 and seen.count(1) == 3
    with pytest.raises(ValueError, match="one weight per task"):
        data.task_schedule(2, [1])
    with pytest.raises(ValueError, match="positive integers"):
        data.task_schedule(2, [1, 0])
    config = configs.resolve_config("smoke", task_weights={"noise": 3})
    assert config.stage2_task_weights() == [3, 1, 1, 1]
    assert configs.config_from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="not in tasks"):
        configs.resolve_config("smoke", task_weights={"low_light": 2})
    with pytest.raises(ValueError, match="positive integers"):
        configs.resolve_config("smoke", task_weights={"noise": 1.5})


def test_router_learning_rate_scale_puts_the_router_in_its_own_group(tiny_restorer):
    plain = run.restorer_groups(tiny_restorer, configs.resolve_config("smoke"))
    assert [len(params) for params, _ in plain] == [len(list(tiny_restorer.parameters())), 0]
    scaled = run.restorer_groups(tiny_restorer, configs.resolve_config("smoke", lr=1e-3, router_lr_scale=10))
    (rest, rest_lr), (router, router_lr) = scaled
    assert rest_lr == 1e-3 and router_lr == pytest.approx(1e-2)
    assert {id(p) for p in router} == {id(p) for p in tiny_restorer.router.parameters()}
    assert len(rest) + len(router) == len(list(tiny_restorer.parameters()))
    optimizer = run.optimizer_for(scaled, 0.0)
    assert [group["base_lr"] for group in optimizer.param_groups] == [1e-3, pytest.approx(1e-2)]
    # resuming with the router's group added or removed is refused, naming the setting
    with pytest.raises(ValueError, match="restorer: the checkpoint's optimizer has 2 .* makes 1 .*router_lr_scale"):
        run.load_optimizer_state(run.optimizer_for(plain, 0.0), optimizer.state_dict(), "restorer")
    with pytest.raises(ValueError, match="router_lr_scale must be positive"):
        configs.resolve_config("smoke", router_lr_scale=0)


def test_perceiver_windows_share_one_random_side_within_the_range():
    rng = np.random.default_rng(0)
    batch = torch.arange(2 * 3 * 48 * 48, dtype=torch.float32).reshape(2, 3, 48, 48)
    sides = set()
    for _ in range(50):
        window = run.synchronised_window(48, 32, rng)
        crop = batch[window]
        assert crop.shape[:2] == (2, 3) and crop.shape[2] == crop.shape[3]
        sides.add(crop.shape[2])
    assert min(sides) == 32 and max(sides) == 48 and len(sides) > 5


@needs_datasets
def test_perceiver_is_measured_at_both_crop_sizes_and_can_be_fine_tuned(smoke_run, tmp_path, capsys):
    import evaluate

    from perceive_ir import zoo

    folder, result = smoke_run
    metrics = result["perceiver_accuracy"]
    assert set(metrics) >= {"accuracy_32px", "accuracy_48px"}  # smoke: crops of 32 to 48 px
    assert metrics["accuracy"] == pytest.approx((metrics["accuracy_32px"] + metrics["accuracy_48px"]) / 2)
    _config, _mediums, perceiver, _restorer = run.load_run(folder, with_restorer=False)
    weights = tmp_path / "smoke-perceiver.safetensors"
    zoo.save_weights(perceiver, weights)
    assert perceiver.config.tile_size == 48  # it rates tiles of its largest training crop by default
    # a run from before perceiver_crop_max trained on perceiver_crop only: read so, also on resume
    old_run = tmp_path / "old-run"
    old_run.mkdir()
    for phase in ("medium0", "medium1", "perceiver"):
        state = run.load_checkpoint(folder / f"{phase}.pt")
        state["config"] = {k: v for k, v in state["config"].items() if k not in ("perceiver_crop_max", "microscopy_zoom")}
        run.save_checkpoint(old_run / f"{phase}.pt", state)
    assert run.load_perceiver_checkpoint(old_run)[0].config.tile_size == 32
    assert run.load_run(old_run, with_restorer=False)[0].microscopy_zoom == 1.0
    resumed = run.resolve(run.parse_arguments(["--out", str(old_run), "--resume"]), old_run)
    assert resumed.perceiver_crop_max is None and resumed.microscopy_zoom == 1.0
    report = evaluate.section_perceiver(str(weights), folder, 1, results := {})
    # at its tile size, and at its other training crop side and the CLIP input (64 px for the smoke CLIP)
    assert "held-out crops of its tile size (48px" in report and "classical statistics" in report
    assert "| all, 32px | all, 64px |" in report
    model = results["perceiver"]["model"]
    for size in ("32px", "48px"):  # the same crops as training's measurement
        assert model[f"accuracy_{size}"] == pytest.approx(metrics[f"accuracy_{size}"])
    assert model["accuracy"] == model["accuracy_48px"] and "accuracy_64px" in model
    assert set(results["perceiver"]["classical"]) == set(model)
    # fine-tuning: stage 1 of a new folder starts from the given perceiver
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    for phase in ("medium0", "medium1"):
        run.save_checkpoint(tuned / f"{phase}.pt", run.load_checkpoint(folder / f"{phase}.pt"))
    run.main(["--config", "smoke", "--out", str(tuned), "--stage", "1", "--resume",
              "--override", f"perceiver_init_from={json.dumps(str(weights))}", "--override", "perceiver_steps=1"])
    assert "[perceiver] initialised from" in capsys.readouterr().out
    before, after = perceiver.state_dict(), run.load_checkpoint(tuned / "perceiver.pt")["models"]["model"]
    assert all(torch.allclose(before[k].float(), after[k].float(), atol=0.02) for k in before)
    assert not all(torch.equal(before[k].float(), after[k].float()) for k in before)  # and it trained
    other = tmp_path / "other"
    other.mkdir()
    for phase in ("medium0", "medium1"):
        run.save_checkpoint(other / f"{phase}.pt", run.load_checkpoint(folder / f"{phase}.pt"))
    with pytest.raises(ValueError, match="does not fit this run's perceiver"):
        run.main(["--config", "smoke", "--out", str(other), "--stage", "1", "--resume", "--override", "n_ctx=5",
                  "--override", f"perceiver_init_from={json.dumps(str(weights))}", "--override", "perceiver_steps=1"])


def test_deblur_inputs_give_the_network_what_restore_gives_it():
    """With ``deblur_inputs`` a motion-blurred sample is deconvolved (as restore(deblur="auto") does
    before the network) and a noisy one is left as it is."""
    from skimage import data as skdata

    from perceive_ir import degrade as D

    scene = skdata.astronaut()[64:192, 192:320]  # one 128 px region, where the kernel is detected
    blur = data.SynthesizedTask("motion_blur", [scene], lambda clean, rng: D.motion_blur(clean, 11.0, 60.0))
    noise = data.SynthesizedTask("noise", [scene], lambda clean, rng: D.add_gaussian_noise(clean, 25 / 255, rng=rng))
    plain = data.TaskBalancedDataset([blur, noise], 96, 128, 2, seed=0, augment=False)
    deblurred = data.TaskBalancedDataset([blur, noise], 96, 128, 2, seed=0, augment=False, deblur=True)
    error = lambda item: float(torch.mean((item["degraded"] - item["clean"]) ** 2))  # noqa: E731
    assert error(deblurred[0]) < 0.6 * error(plain[0])  # the motion-blurred sample, deconvolved
    assert torch.equal(deblurred[1]["degraded"], plain[1]["degraded"])  # the noisy one, untouched
    probe = data.fixed_samples([blur, noise], 1, 96, seed=0, deblur=True)
    assert probe["degraded"].shape == (2, 3, 96, 96)
    assert configs.resolve_config("smoke").deblur_inputs is False
    assert configs.resolve_config("smoke", deblur_inputs=True).deblur_inputs is True
