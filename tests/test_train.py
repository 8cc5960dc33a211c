"""The partial-label training loop: modes, schedules, checkpoints, resume, CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_datasets import write_synthetic_cohort

from lvt_core.checkpoint import load_checkpoint
from lvt_core.precision import cpu_has_bf16
from training.config import ConfigError, TrainConfig, load_config
from training.datasets import DatasetError, load_cases
from training.train import make_optimizer, train

REPO = Path(__file__).resolve().parent.parent


def tiny_config(tmp_path: Path, mode: str = "ML", **extra) -> TrainConfig:
    cohort = tmp_path / "cohort"
    if not (cohort / "manifest.csv").is_file():
        write_synthetic_cohort(cohort, 5)
    raw = {"name": "tiny", "mode": mode, "output_dir": str(tmp_path / f"run_{mode}"),
           "cache_dir": str(tmp_path / "cache"), "spacing_mm": [3, 3, 3], "patch_size": [16, 16, 16],
           "batch_size": 2, "epochs": 2, "steps_per_epoch": 3, "checkpoint_every": 1,
           "network": {"variant": "plain_in", "filters": [4, 8, 16], "deep_supr_num": 1},
           "fold": 0, "n_folds": 5, "fp16_checkpoint": True, "num_threads": 1,
           "datasets": [{"source": "synthetic", "path": str(cohort)}], **extra}
    return TrainConfig.model_validate(raw)


@pytest.mark.parametrize("mode", ["ML", "MLx", "MC"])
def test_each_mode_trains_and_the_predictor_loads_the_checkpoint(tmp_path: Path, mode: str) -> None:
    from lvt_core.imageio import read_image
    from lvt_core.inference import Predictor

    result = train(tiny_config(tmp_path, mode), device="cpu")
    assert result.step == result.total_steps == 6
    _, meta = load_checkpoint(result.checkpoint)
    assert meta["label_space"] == ("multiclass" if mode == "MC" else "multilabel")
    assert meta["network"]["out_channels"] == (4 if mode == "MC" else 3)
    assert meta["spacing_mm"] == [3.0, 3.0, 3.0] and meta["training_data"][0]["source"] == "synthetic"
    rows = (result.output_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_dice_liver" in rows[0]  # header + one row per epoch
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    image = read_image(tmp_path / "cohort" / "P000" / "image.nii.gz")
    labels = Predictor(result.checkpoint, device="cpu").predict(image)
    assert labels.GetSize() == image.GetSize()


def test_batch_dice_trains_on_the_same_batches_with_another_loss(tmp_path: Path) -> None:
    per_patch = train(tiny_config(tmp_path, output_dir=str(tmp_path / "a")), device="cpu")
    batch = train(tiny_config(tmp_path, output_dir=str(tmp_path / "b"), batch_dice=True), device="cpu")
    assert batch.step == per_patch.step == 6
    losses = [(r["train_loss"], q["train_loss"]) for r, q in zip(batch.history, per_patch.history, strict=True)]
    assert all(np.isfinite(a) and a != b for a, b in losses)


@pytest.mark.parametrize("lesion_balanced", [False, True])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path, lesion_balanced: bool) -> None:
    extra = {"lesion_balanced_sampling": lesion_balanced, "foreground_prob": 0.9}
    straight = train(tiny_config(tmp_path, output_dir=str(tmp_path / "a"), **extra), device="cpu")
    stopped = train(tiny_config(tmp_path, output_dir=str(tmp_path / "b"), **extra), device="cpu", max_steps=4)
    assert stopped.step == 4 and stopped.checkpoint is None
    resumed = train(tiny_config(tmp_path, output_dir=str(tmp_path / "b"), **extra), device="cpu", resume=True)
    assert resumed.step == straight.step == 6
    a, _ = load_checkpoint(straight.checkpoint)
    b, _ = load_checkpoint(resumed.checkpoint)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-3), key
    assert [r["step"] for r in resumed.history] == [3, 6]
    # the epoch the stop cut averages all its steps, not the two after the resume, and the
    # clock goes on (it restarted from 0)
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-3)
    assert resumed.history[1]["elapsed_s"] >= resumed.history[0]["elapsed_s"]


def test_a_resume_with_another_recipe_or_a_damaged_state_is_refused(tmp_path: Path) -> None:
    """A changed network died in torch ("size mismatch"); a changed voxel size resumed silently."""
    from training.config import ConfigError

    out = str(tmp_path / "run")
    train(tiny_config(tmp_path, output_dir=out), device="cpu", max_steps=3)
    kept = (tmp_path / "run" / "config.yaml").read_text()
    for change, said in (({"spacing_mm": [4.0, 4.0, 4.0]}, "spacing_mm"), ({"mode": "MC"}, "mode")):
        with pytest.raises(ConfigError, match=f"another recipe .*{said}"):
            train(tiny_config(tmp_path, output_dir=out, **change), device="cpu", resume=True)
        assert (tmp_path / "run" / "config.yaml").read_text() == kept  # the refused run wrote nothing
    state = tmp_path / "run" / "state.pt"
    state.write_bytes(state.read_bytes()[:5000])
    with pytest.raises(ConfigError, match=r"state\.pt: cannot resume .* damaged"):
        train(tiny_config(tmp_path, output_dir=out), device="cpu", resume=True)


def test_an_unvalidated_run_keeps_its_best_epoch(tmp_path: Path) -> None:
    """Without validation the score is minus the train loss; best.pt waited for a loss below 1."""
    result = train(tiny_config(tmp_path, fold=-1), device="cpu")
    assert (result.output_dir / "best.pt").is_file()


def test_killed_process_resumes_with_the_cli(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, epochs=40)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    lvt = [str(REPO / ".venv" / "bin" / "lvt")]
    proc = subprocess.Popen([*lvt, "train", str(path), "--device", "cpu"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = config.output_dir / "state.pt"
    import time

    deadline = time.time() + 60
    while not state.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert state.is_file()
    done = subprocess.run([*lvt, "train", str(path), "--resume", "--json", "--device", "cpu"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["finished"] and summary["step"] == 120
    assert "resumed" in done.stderr


def test_schedules() -> None:
    model = torch.nn.Linear(2, 2)
    sgd = TrainConfig.model_validate({"datasets": [], "epochs": 1, "steps_per_epoch": 100,
                                      "optimizer": {"name": "sgd", "lr": 0.01}})
    opt, sched = make_optimizer(sgd, model)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[50] == pytest.approx(0.01 * 0.5**0.9, rel=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    adamw = sgd.model_copy(update={"optimizer": sgd.optimizer.model_copy(
        update={"name": "adamw", "lr": 1e-3, "warmup_steps": 10})})
    opt, sched = make_optimizer(adamw, model)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[9] == pytest.approx(1e-3) and lrs[99] < 1e-5


@pytest.mark.parametrize(
    "config_path", sorted((REPO / "training" / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_config_loads(config_path: Path) -> None:
    """Each recorded stage or trial must stay reproducible: its config still passes validation."""
    config = load_config(config_path)
    assert config.datasets, f"{config_path.name} names no training data"
    assert f"training/configs/{config_path.name}" in config_path.read_text(encoding="utf-8"), (
        f"{config_path.name}: the header should show the command that runs it"
    )


def test_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    refused = {  # file name: (text, what the message must say after the file name)
        "bad.yaml": ("mode: XYZ\n", r"mode"),
        "mc_batch.yaml": ("mode: MC\nbatch_dice: true\n", r"batch_dice is for the sigmoid modes"),
        "sampling.yaml": ("contrast_sampling: gaussian\n", r"contrast_sampling"),
        "diameters.yaml": ("synthetic_lesion_diameter_mm: [20, 4]\n",
                           r"synthetic_lesion_diameter_mm: needs 0 < low <= high"),
        # typos inside free-form blocks trained the default network, or died in a worker
        "filtres.yaml": ("network: {filtres: [8, 16]}\n", r"network: unknown key\(s\) \['filtres'\]"),
        "livr.yaml": ("foreground_class_weights: {livr: 1.0}\n", r"foreground_class_weights: unknown class"),
        "widht.yaml": ("window: {level: 60, widht: 400}\n", r"window: needs exactly the keys level and width"),
        "spacing.yaml": ("spacing_mm: [0, 4, 4]\n", r"spacing_mm: needs three positive values"),
        # PyYAML keeps the last of two equal keys: this trained 5 epochs without a word
        "dup.yaml": ("epochs: 3\nepochs: 5\n", r"line 2: duplicate key 'epochs'"),
        "dup_nested.yaml": ("network:\n  filters: [4]\n  filters: [8]\n", r"line 3: duplicate key 'filters'"),
        # an importer option typo was a raw TypeError from inside training
        "options.yaml": ("datasets:\n  - {source: synthetic, path: a}\n"
                         "  - {source: hv_liver, path: b, options: {image: c}}\n",
                         r"datasets\.1\.options\.image: unknown option \(known: images\)"),
        "no_options.yaml": ("datasets:\n  - {source: lits, path: a, options: {images: c}}\n",
                            r"datasets\.0\.options\.images: unknown option \(lits takes no options\)"),
    }
    for name, (text, message) in refused.items():
        (tmp_path / name).write_text(text if "datasets:" in text else text + "datasets: []\n")
        with pytest.raises(ConfigError, match=rf"{name}: {message}"):
            load_config(tmp_path / name)
    with pytest.raises(DatasetError, match=r"hv_liver: unknown option 'image' \(known: images\)"):
        load_cases("hv_liver", tmp_path, image=tmp_path)  # a config built in code is checked too
    bad = tmp_path / "bad.yaml"
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: f\u00e9e\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 7\)"):
        load_config(latin1)
    stage16 = load_config(REPO / "training" / "configs" / "default_model_stage16.yaml")
    assert stage16.contrast_sampling == "log_uniform" and stage16.synthetic_lesion_diameter_mm == (4.0, 24.0)
    cfg = load_config(REPO / "training" / "configs" / "default_model.yaml")
    assert cfg.network["variant"] == "plain_in" and cfg.optimizer.name == "sgd" and cfg.mode == "ML"
    out = subprocess.run([str(REPO / ".venv" / "bin" / "lvt"), "train", str(bad)], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "bad.yaml" in out.stderr
    listed = subprocess.run([str(REPO / ".venv" / "bin" / "lvt"), "train", "--list-datasets", "--json"],
                            cwd=REPO, capture_output=True, text=True)
    names = {d["name"]: d["class_weights"] for d in json.loads(listed.stdout)["datasets"]}
    assert names["lits"] == [1.0, 0.0, 1.0]


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_training_on_cpu_follows_the_fp32_run(tmp_path: Path) -> None:
    fp32 = train(tiny_config(tmp_path, output_dir=str(tmp_path / "fp32")), device="cpu")
    bf16 = train(tiny_config(tmp_path, output_dir=str(tmp_path / "bf16"), precision="bf16"), device="cpu")
    losses32 = [r["train_loss"] for r in fp32.history]
    losses16 = [r["train_loss"] for r in bf16.history]
    assert np.allclose(losses16, losses32, rtol=0.05), (losses16, losses32)
    state, _ = load_checkpoint(bf16.checkpoint)
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from lvt_core import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="no native bfloat16"):
        precision.resolve_precision("bf16", torch.device("cpu"))
    assert precision.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert precision.resolve_precision("auto", torch.device("cuda")) == "fp16"


def test_inference_takes_bf16_by_default_only_for_a_qualified_model_on_a_cpu_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lvt_core import precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve_inference_precision("auto", cpu, "bf16") == "bf16"
    assert precision.resolve_inference_precision("auto", cpu, None) == "fp32"  # not qualified
    assert precision.resolve_inference_precision("fp32", cpu, "bf16") == "fp32"  # asked for
    assert precision.resolve_inference_precision("bf16", cpu, None) == "bf16"
    assert precision.resolve_inference_precision("auto", cuda, "bf16") == "fp16"
    assert precision.resolve_precision("auto", cpu) == "fp32"  # training stays fp32
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.resolve_inference_precision("auto", cpu, "bf16") == "fp32"  # never emulated


def test_two_cohorts_of_one_source_are_sampled_by_their_own_weights(tmp_path: Path) -> None:
    from training.preprocess import preprocess
    from training.sampling import step_rng
    from training.train import BatchMaker, gather_cases

    write_synthetic_cohort(tmp_path / "big", 4)
    write_synthetic_cohort(tmp_path / "small", 1)
    config = tiny_config(tmp_path, datasets=[
        {"source": "synthetic", "path": str(tmp_path / "big"), "weight": 1.0},
        {"source": "synthetic", "path": str(tmp_path / "small"), "weight": 3.0},
    ])
    cases = gather_cases(config)
    prepared = [preprocess(c, (3.0, 3.0, 3.0), config.cache_dir) for c in cases]
    sampler = BatchMaker(config, prepared).sampler
    small = {i for i, c in enumerate(cases) if Path(c.image).is_relative_to(tmp_path / "small")}
    assert len(small) == 1 and len(cases) == 5
    share = np.mean([sampler.choose(step_rng(0, s)) in small for s in range(2000)])
    assert 0.7 < share < 0.8  # 3 / (1 + 3): the one-case cohort's weight, not 1 case in 5


def test_worker_processes_build_the_batches_the_loop_would(tmp_path: Path) -> None:
    from training.loader import prepare_all, step_batches
    from training.train import BatchMaker, gather_cases

    config = tiny_config(tmp_path, synthetic_lesions=0.5, contrast_randomization=0.5)
    cases = gather_cases(config)
    spacing = tuple(config.spacing_mm)
    serial = prepare_all(cases, spacing, tmp_path / "serial_cache", False, workers=0)
    pooled = prepare_all(cases, spacing, tmp_path / "pooled_cache", False, workers=2)
    for a, b in zip(serial, pooled, strict=True):
        assert a.case_id == b.case_id
        assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    maker = BatchMaker(config, serial)
    here = list(step_batches(maker, 3, 8, workers=0))
    there = list(step_batches(maker, 3, 8, workers=2))
    assert len(here) == len(there) == 5
    for a, b in zip(here, there, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(here[0]["image"], here[1]["image"])  # steps differ from each other


def test_a_run_with_data_workers_ends_with_the_weights_of_one_without(tmp_path: Path) -> None:
    plain = train(tiny_config(tmp_path, output_dir=str(tmp_path / "plain")), device="cpu")
    pooled = train(tiny_config(tmp_path, output_dir=str(tmp_path / "pooled"), data_workers=2), device="cpu")
    a, _ = load_checkpoint(plain.checkpoint)
    b, _ = load_checkpoint(pooled.checkpoint)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-3), key


def test_max_minutes_stops_with_the_state_saved_and_resume_finishes(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, output_dir=str(tmp_path / "timed"), data_workers=1)
    stopped = train(config, device="cpu", max_minutes=0)
    assert stopped.step == 0 and stopped.checkpoint is None
    assert (tmp_path / "timed" / "state.pt").is_file()
    resumed = train(config, device="cpu", resume=True, max_minutes=30)
    assert resumed.step == resumed.total_steps == 6 and resumed.checkpoint is not None


def test_the_paper_recipe_on_public_data_builds_nnunet_sized_and_trains_on_all_four_sources(tmp_path: Path) -> None:
    from test_datasets import write_public_layouts

    from lvt_core.network import build_network, patch_divisor

    config = load_config(REPO / "training" / "configs" / "paper_lvt_public.yaml")
    assert config.spacing_mm == [1.0, 1.0, 1.0] and config.patch_size == [128, 128, 96]
    assert config.optimizer.name == "sgd" and config.mode == "ML" and config.network["deep_supr_num"] == 2
    assert config.total_steps * config.batch_size == 448_000
    assert all(p % d == 0 for p, d in zip(config.patch_size, patch_divisor(config.network), strict=True))
    network = build_network({**config.network, "out_channels": config.out_channels}).eval()
    assert 25e6 < sum(p.numel() for p in network.parameters()) < 40e6  # nnU-Net 3d_fullres: ~31M
    with torch.inference_mode():
        assert network(torch.zeros(1, 1, 64, 64, 64)).shape == (1, 3, 64, 64, 64)

    folders = write_public_layouts(tmp_path / "public")
    datasets = [{**spec.model_dump(mode="json"), "path": str(folders[spec.source]),
                 **({"options": {"images": str(folders["msd_hepaticvessel"])}} if spec.source == "hv_liver" else {})}
                for spec in config.datasets]
    small = config.model_copy(update={
        "datasets": [type(config.datasets[0]).model_validate(d) for d in datasets],
        "output_dir": tmp_path / "run", "cache_dir": tmp_path / "cache", "spacing_mm": [3.0, 3.0, 3.0],
        "patch_size": [16, 16, 16], "network": {**config.network, "filters": [4, 8, 16, 32]},
        "epochs": 1, "steps_per_epoch": 2, "checkpoint_every": 1, "fold": -1, "num_threads": 1})
    result = train(small, device="cpu")
    _, meta = load_checkpoint(result.checkpoint)
    assert {d["source"] for d in meta["training_data"]} == {"lits", "msd_hepaticvessel", "hv_liver", "ircadb"}


def test_augmentation_without_metatensor_bookkeeping_gives_the_same_patches() -> None:
    from monai.data import get_track_meta

    from lvt_core.transforms import train_transforms
    from training.train import plain_tensors

    rng = np.random.default_rng(5)
    image = rng.normal(60.0, 30.0, (1, 40, 40, 40)).astype(np.float32)
    target = (rng.random((3, 40, 40, 40)) > 0.7).astype(np.float32)
    transforms = train_transforms([24, 24, 24])
    outputs = []
    for plain in (False, True):
        for seed in range(6):  # several draws, so zoom and rotation are among them
            transforms.set_random_state(seed=seed)
            if plain:
                with plain_tensors():
                    assert not get_track_meta()
                    out = transforms({"image": image, "target": target})
            else:
                out = transforms({"image": image, "target": target})
            out = out[0] if isinstance(out, list) else out
            outputs.append({k: np.asarray(v) for k, v in out.items()})
    assert get_track_meta()  # restored for everything else
    for tracked, plain in zip(outputs[:6], outputs[6:], strict=True):
        assert tracked.keys() == plain.keys()
        assert all(np.array_equal(tracked[k], plain[k]) for k in tracked)
