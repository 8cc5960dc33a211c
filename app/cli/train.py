"""``lvt train``, ``lvt evaluate-model``, ``lvt calibrate``, ``lvt calibrate-faint``, ``lvt calibrate-cross-phase``,
``lvt qualify-bf16``, ``lvt ensemble`` and ``lvt experiment partial-labels``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from app.cli.common import UserError, print_json, progress_bar, setting_choice

experiment_app = typer.Typer(help="Reproducible experiments.", no_args_is_help=True)


def train_command(
    config: Path = typer.Argument(None, help="Training config YAML (see training/configs/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the config's output_dir."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda; default LVT_DEVICE, else auto."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many steps (smoke run)."),
    max_minutes: float = typer.Option(None, "--max-minutes", min=0,
                                      help="Stop the loop after this many minutes (state saved; --resume goes on)."),
    workers: int = typer.Option(None, "--workers", min=0,
                                help="Processes building batches ahead (default: 0 on CPU, up to 8 with a GPU)."),
    precision: str = typer.Option(None, "--precision",
                                  help="auto (fp16 AMP on CUDA, fp32 on CPU), fp32, or bf16 (CPUs with AMX/AVX-512 BF16)."),
    list_datasets: bool = typer.Option(False, "--list-datasets", help="Show the registered sources."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Train a model on partially labelled sources (resumable; checkpoints with metadata)."""
    if list_datasets:
        from training.datasets import list_sources

        sources = [{"name": s.name, "annotated": list(s.annotated),
                    "class_weights": s.class_weights.tolist(), "layout": s.layout,
                    "description": s.description} for s in list_sources()]
        if as_json:
            print_json({"datasets": sources})
        else:
            for s in sources:
                typer.echo(f"{s['name']:<24} w={s['class_weights']}  {s['description']}  [{s['layout']}]")
        return
    if config is None:
        raise typer.BadParameter("give a CONFIG file (or --list-datasets)")
    device = setting_choice(device, "--device", "device")  # bad usage (exit 2), before any data is read
    from training.config import ConfigError, load_config
    from training.datasets import DatasetError
    from training.train import train

    try:
        cfg = load_config(config, precision=precision, data_workers=workers)
        with progress_bar() as progress:
            task = progress.add_task(f"training {cfg.name}", total=cfg.total_steps)

            def on_step(step: int, total: int, loss: float) -> None:
                progress.update(task, completed=step, description=f"training {cfg.name} loss {loss:.3f}")

            result = train(cfg, resume=resume, device=device, max_steps=max_steps, on_step=on_step,
                           max_minutes=max_minutes)
    except (ConfigError, DatasetError, ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    summary = {"output_dir": str(result.output_dir), "checkpoint": str(result.checkpoint) if result.checkpoint else None,
               "step": result.step, "total_steps": result.total_steps,
               "finished": result.step >= result.total_steps, "seconds": round(result.seconds, 1),
               "last_epoch": result.history[-1] if result.history else None}
    if as_json:
        print_json(summary)
    else:
        done = "finished" if summary["finished"] else "stopped (resume with --resume)"
        typer.echo(f"{done} at step {result.step}/{result.total_steps}; model: {summary['checkpoint']}")


def evaluate_model_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) to evaluate."),
    cohort: Path = typer.Option(..., "--cohort", help="Held-out phantom cohort folder (manifest.csv)."),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json and per_case.csv."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda; default LVT_DEVICE, else auto."),
    tta: bool = typer.Option(None, "--tta/--no-tta", help="Mirroring TTA (default: on for GPU, off for CPU)."),
    precision: str = typer.Option(None, "--precision",
                                  help="auto (default: LVT_PRECISION, else the model's qualified one), fp32 or bf16."),
    save_predictions: bool = typer.Option(
        False, "--save-predictions", help="Also write each label map to OUT/predictions/<case>.nii.gz."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Model-card metrics of a checkpoint on a held-out phantom cohort."""
    from training.evaluate_model import evaluate_checkpoint

    device = setting_choice(device, "--device", "device")  # bad usage (exit 2), before any scan is read
    precision = setting_choice(precision, "--precision", "precision")
    try:
        summary = evaluate_checkpoint(checkpoint, cohort, out, device, tta=tta,
                                      precision=precision,
                                      save_predictions=save_predictions)
    except (ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"precision: {summary['precision']}")
        for key in ("liver_dsc", "vessel_dsc", "tumor_dsc", "lesion_sensitivity_10mm", "false_lesions_per_scan"):
            typer.echo(f"{key}: {summary[key]}")
        from lvt_core.cross_phase import CrossPhaseRule

        if CrossPhaseRule.from_meta(summary["cross_phase"]).enabled:
            typer.echo(f"phases of a day read together: {summary['cross_phase_lesions_added']} lesions added "
                       f"where another phase confirmed or carried them")
        volumetry = summary["phase_volumetry"]
        if volumetry["studies"]:
            typer.echo(f"same-day phases: {volumetry['flagged_studies']} of {volumetry['studies']} studies beyond "
                       f"±{volumetry['threshold_pct']:g} % (median |deviation| "
                       f"{volumetry['median_abs_deviation_pct']:.2f} %, max {volumetry['max_abs_deviation_pct']:.2f} %; "
                       f"ground truth max {volumetry['reference_max_abs_deviation_pct']:.2f} %)")
        sizes = summary["diameter_agreement"]
        if sizes["lesions"]:
            typer.echo(f"longest axial diameter of {sizes['lesions']} found lesions ≥ 10 mm: median |error| "
                       f"{sizes['median_abs_error_mm']:.1f} mm, mean {sizes['mean_signed_error_mm']:+.1f} mm "
                       "(+: drawn larger than the truth)")


def _numbers(option: str, text: str) -> list[float]:
    try:
        return [float(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} must be numbers separated by commas, got {text!r}") from None


def _window(option: str, text: str) -> tuple[float, float]:
    """``LEVEL:WIDTH`` in HU, as the pair the predictor takes."""
    parts = text.split(":")
    try:
        level, width = (float(part) for part in parts)
    except ValueError:
        raise typer.BadParameter(f"{option} must be LEVEL:WIDTH in HU (say 82:141), got {text!r}") from None
    return level, width


def _per_case_progress(label: str, work: Callable[[Callable[[str], None]], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work(on_case)`` under a progress bar that ticks once per scan; bad input becomes
    a :class:`UserError` (a clear message and a non-zero exit)."""
    try:
        with progress_bar() as progress:
            task = progress.add_task(label, total=None)
            return work(lambda _case: progress.advance(task))
    except (ValueError, OSError) as exc:
        raise UserError(str(exc)) from None


def calibrate_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) to calibrate."),
    cohort: list[Path] = typer.Option(..., "--cohort", help="Validation phantom cohort, never the test "
                                      "cohort; repeat to pool several (thin- and thick-slice scans)."),
    out: Path = typer.Option(..., "--out", help="Where to write the calibrated copy of the checkpoint."),
    candidates: str = typer.Option("0.5,0.4,0.3,0.2", "--candidates", help="Comma-separated tumor thresholds."),
    vessel_candidates: str = typer.Option("0.5,0.4,0.3", "--vessel-candidates",
                                          help="Comma-separated vessel thresholds."),
    min_volumes: str = typer.Option("0,0.02,0.05,0.1", "--min-tumor-volumes",
                                    help="Comma-separated smallest tumor components kept (ml)."),
    min_peaks: str = typer.Option("0,0.7,0.9,0.95,0.98", "--min-tumor-peaks",
                                  help="Comma-separated lowest peak probability a tumor component "
                                       "must reach to be kept (0: any)."),
    min_scores: str = typer.Option(None, "--min-lesion-scores",
                                   help="Comma-separated lowest lesion-filter scores a tumor component "
                                        "must reach (default 0,0.1,…,0.7 with a filter; 0 without)."),
    max_false: float = typer.Option(1.0, "--max-false-lesions", min=0.0,
                                    help="Most false lesions per validation scan the chosen "
                                         "decisions may produce (the FROC operating point)."),
    large_tumors: str = typer.Option("0", "--large-tumor-mls",
                                     help="Comma-separated volumes (ml) from which a tumor component "
                                          "is kept whatever its peak (0: the peak rule applies to all)."),
    min_roundnesses: str = typer.Option("0", "--min-tumor-roundness",
                                        help="Comma-separated lowest roundness (smallest over largest "
                                             "principal axis: 1 a ball, near 0 a tube) a tumor component "
                                             "below --large-tumor-mls must reach to be kept (0: any shape)."),
    max_outsides: str = typer.Option("1", "--max-tumor-outside",
                                     help="Comma-separated largest share of the 5 mm shell around a tumor "
                                          "component that may lie outside the organ; more becomes "
                                          "background (1: off; a neighbour drawn as tumor, say the gallbladder)."),
    edge_fractions: str = typer.Option("0", "--edge-fractions",
                                       help="Comma-separated fractions of the way from the liver "
                                            "around a lesion to its core at which its edge is drawn "
                                            "in the CT (0: the network's extent; 0.5: half way)."),
    edge_max_voxels: str = typer.Option("0", "--edge-max-voxel-mm",
                                        help="Comma-separated largest voxel sides (mm) of the scans "
                                             "whose lesion edges are moved (0: every scan; thicker "
                                             "slices keep the network's extent: partial volume)."),
    extra_windows: list[str] = typer.Option(None, "--extra-window",
                                            help="LEVEL:WIDTH of an HU window whose probabilities "
                                                 "are averaged with the main window's (window TTA; "
                                                 "repeat for more; default: the checkpoint's)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda; default LVT_DEVICE, else auto."),
    version: str = typer.Option(None, "--version", help="Version of the calibrated copy (default: "
                                "the checkpoint's); a store refuses two checksums under one version."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Choose the vessel and tumor thresholds, the smallest and least round tumor kept and where
    lesion edges are drawn on a validation cohort."""
    device = setting_choice(device, "--device", "device")  # bad usage (exit 2) before any scan is read
    from training.calibrate import calibrate_decisions

    tumor = _numbers("--candidates", candidates)
    vessel = _numbers("--vessel-candidates", vessel_candidates)
    volumes = _numbers("--min-tumor-volumes", min_volumes)
    peaks = _numbers("--min-tumor-peaks", min_peaks)
    scores = _numbers("--min-lesion-scores", min_scores) if min_scores else None
    fractions = _numbers("--edge-fractions", edge_fractions)
    large = _numbers("--large-tumor-mls", large_tumors)
    roundnesses = _numbers("--min-tumor-roundness", min_roundnesses)
    outsides = _numbers("--max-tumor-outside", max_outsides)
    max_voxels = _numbers("--edge-max-voxel-mm", edge_max_voxels)
    windows = [_window("--extra-window", text) for text in extra_windows] if extra_windows else None
    result = _per_case_progress("calibrating", lambda on_case: calibrate_decisions(
        checkpoint, cohort, out, tumor, vessel, volumes, device, on_case=on_case, min_peaks=peaks,
        version=version, max_false_per_scan=max_false, min_lesion_scores=scores, edge_fractions=fractions,
        edge_max_voxels_mm=max_voxels, extra_windows=windows, large_tumor_mls=large,
        min_roundnesses=roundnesses, max_outsides=outsides))
    if as_json:
        print_json(result)
        return
    for row in result["vessel_candidates"]:
        typer.echo(f"vessel threshold {row['vessel_threshold']}: vessel DSC {row['vessel_dsc']:.3f}")
    for row in result["candidates"]:
        typer.echo(f"tumor threshold {row['tumor_threshold']}, min peak {row['min_tumor_peak']} "
                   f"({_peak_applies(row['large_tumor_ml'])}), min roundness {row['min_tumor_roundness']}, "
                   f"max outside {row['max_tumor_outside']}, "
                   f"min lesion score {row['min_lesion_score']}, edge fraction {row['edge_fraction']} "
                   f"(voxels ≤ {row['edge_max_voxel_mm'] or 'any'} mm), min volume {row['min_tumor_volume_ml']} ml: "
                   f"score {row['score']} (tumor DSC {row['tumor_dsc']:.3f}, "
                   f"lesions ≥ 10 mm {row['detected_10mm']}/{row['lesions_10mm']}, "
                   f"false lesions per scan {row['false_lesions_per_scan']})")
    typer.echo(f"chosen: vessel {result['best_vessel_threshold']}, tumor {result['best_tumor_threshold']}, "
               f"min tumor peak {result['best_min_tumor_peak']} "
               f"({_peak_applies(result['best_large_tumor_ml'])}), "
               f"min tumor roundness {result['best_min_tumor_roundness']}, "
               f"max tumor outside {result['best_max_tumor_outside']}, "
               f"min lesion score {result['best_min_lesion_score']}, "
               f"edge fraction {result['best_edge_fraction']} "
               f"(voxels ≤ {result['best_edge_max_voxel_mm'] or 'any'} mm), min tumor volume {result['best_min_tumor_volume_ml']} ml; wrote {result['out']}")
    if windows:
        typer.echo("with extra HU windows (level:width) " + ", ".join(f"{lv:g}:{wd:g}" for lv, wd in windows))


def _peak_applies(large_tumor_ml: float) -> str:
    """To which tumor components the peak rule applies, as the terminal says it."""
    return f"below {large_tumor_ml:g} ml" if large_tumor_ml else "any size"


def calibrate_faint_command(
    checkpoint: Path = typer.Argument(..., help="Calibrated checkpoint (.pt) to add the search to."),
    cohort: list[Path] = typer.Option(..., "--cohort", help="Validation phantom cohort, never the test "
                                      "cohort; repeat to pool several."),
    out: Path = typer.Option(..., "--out", help="Where to write the copy carrying the search's decisions."),
    min_z: str = typer.Option("5,6,7,8,10", "--min-z", help="Comma-separated contrasts, in robust noise "
                              "spreads, a region must reach to be a candidate."),
    min_blobness: str = typer.Option("0.3,0.4,0.5", "--min-blobness",
                                     help="Comma-separated lowest blobness (1 sphere, 0 tube) kept."),
    min_z_bright: str = typer.Option("0", "--min-z-bright", help="Comma-separated contrasts for lesions "
                                     "brighter than the liver; 0 leaves them unsearched (the default)."),
    lesion_side_vessels: str = typer.Option("0", "--lesion-side-vessels",
                                            help="Comma-separated 0/1: whether blobness keeps voxels drawn "
                                                 "as vessel whose HU lies on the lesion's side of the liver."),
    min_roundness: str = typer.Option("0", "--min-roundness",
                                      help="Comma-separated lowest roundness of a found region (smallest over "
                                           "largest principal axis: 1 ball, near 0 tube); 0 keeps every shape."),
    max_false: float = typer.Option(1.0, "--max-false-lesions", min=0.0,
                                    help="Most false lesions per validation scan the chosen decisions may produce."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda; default LVT_DEVICE, else auto."),
    version: str = typer.Option(None, "--version", help="Version of the copy (default: the checkpoint's)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Choose the faint-lesion search's decisions on validation phantoms (off if it does not help)."""
    device = setting_choice(device, "--device", "device")  # bad usage (exit 2) before any scan is read
    from training.calibrate_faint import GRID_FIELDS, calibrate_faint_search

    zs = _numbers("--min-z", min_z)
    blobs = _numbers("--min-blobness", min_blobness)
    bright = _numbers("--min-z-bright", min_z_bright)
    vessel_choices = _numbers("--lesion-side-vessels", lesion_side_vessels)
    if any(v not in (0.0, 1.0) for v in vessel_choices):
        raise typer.BadParameter(f"--lesion-side-vessels takes 0 and 1, got {lesion_side_vessels!r}")
    result = _per_case_progress("calibrating the faint-lesion search", lambda on_case: calibrate_faint_search(
        checkpoint, cohort, out, zs, blobs, device, on_case=on_case, version=version,
        max_false_per_scan=max_false, min_z_bright=bright,
        lesion_side_vessels=[bool(v) for v in vessel_choices], min_roundness=_numbers("--min-roundness", min_roundness)))
    if as_json:
        print_json(result)
        return
    chosen = _echo_grid(result, GRID_FIELDS, _faint_decisions)
    typer.echo(f"chosen: {chosen}; wrote {result['out']}")


def _echo_grid(result: dict[str, Any], fields: tuple[str, ...], describe: Callable[[dict[str, Any]], str]) -> str:
    """Print a later calibration stage's grid, one scored row per line; return how the chosen
    point reads."""
    for row in result["candidates"]:
        typer.echo(f"{describe(row)}: score {row['score']} (tumor DSC {row['tumor_dsc']:.3f}, "
                   f"lesions ≥ 10 mm {row['detected_10mm']}/{row['lesions_10mm']}, "
                   f"false lesions per scan {row['false_lesions_per_scan']})")
    return describe({name: result[f"best_{name}"] for name in fields})


def _faint_decisions(row: dict[str, Any]) -> str:
    """One row of the faint-lesion calibration (its ``GRID_FIELDS``), as the terminal says it."""
    if not row["min_z"]:
        return "off"
    bright = f", brighter lesions from z {row['min_z_bright']}" if row["min_z_bright"] else ""
    vessels = ", lesion-side vessel voxels kept" if row["lesion_side_vessels"] else ""
    round_enough = f", min roundness {row['min_roundness']}" if row["min_roundness"] else ""
    return f"min z {row['min_z']}, min blobness {row['min_blobness']}{bright}{vessels}{round_enough}"


def calibrate_cross_phase_command(
    checkpoint: Path = typer.Argument(..., help="Calibrated checkpoint (.pt) to add the rule to."),
    cohort: list[Path] = typer.Option(..., "--cohort", help="Validation phantom cohort with two or more "
                                      "phases per day, never the test cohort; repeat to pool several."),
    out: Path = typer.Option(..., "--out", help="Where to write the copy carrying the rule."),
    min_peaks: str = typer.Option("0.5,0.7,0.8,0.9", "--min-peaks", help="Comma-separated lowest peak "
                                  "tumor probability of a dropped candidate another phase may confirm."),
    max_distances: str = typer.Option("5,10,15", "--max-distances",
                                      help="Comma-separated farthest a candidate may lie from the carried "
                                           "centre of the other phase's lesion (mm)."),
    min_volumes: str = typer.Option("0.1", "--min-volumes", help="Comma-separated smallest candidate kept (ml)."),
    carry_min_volumes: str = typer.Option("0.2,0.3,0.5,1", "--carry-min-volumes",
                                          help="Comma-separated smallest lesion (ml) carried whole into a phase "
                                               "where the network left its place as liver (each above 0)."),
    carry_min_contrasts: str = typer.Option("2,3,5,8", "--carry-min-contrasts",
                                            help="Comma-separated least difference (HU) between a carried lesion's "
                                                 "place and the liver around it, darker or brighter."),
    carry_max_brighter: str = typer.Option("0,15,1000", "--carry-max-brighter",
                                           help="Comma-separated most a carried lesion's place may be brighter "
                                                "than the liver (HU; 0: darker only, 1000: no limit)."),
    carry_vessel_min_brighter: str = typer.Option("0", "--carry-vessel-min-brighter",
                                                  help="Comma-separated least a vessel-drawn region under a carried "
                                                       "lesion in an arterial scan must be brighter than the "
                                                       "liver to become tumor (HU; 0: never; arterially "
                                                       "enhancing lesions)."),
    carry_vessel_max_shell: str = typer.Option("0.1", "--carry-vessel-max-shell",
                                               help="Comma-separated share (strictly between 0 and 1; 0.5 or "
                                                    "more is never carried) of the 3 mm shell around such a "
                                                    "region that may be vessel: more, and a vessel runs "
                                                    "through the place."),
    carry_vessel_min_one_sided: str = typer.Option("0", "--carry-vessel-min-one-sided",
                                                   help="Comma-separated least one-sidedness (0 or more, below 1) "
                                                        "of the vessel in that shell: 1 when it lies on one side "
                                                        "of the place (a lesion against a branch), near 0 when on "
                                                        "opposite sides (a vessel running through)."),
    carry_vessel_beside_tumor: str = typer.Option("0", "--carry-vessel-beside-tumor",
                                                  help="Comma-separated 0 or 1: whether such a region is carried "
                                                       "even where a lesion is drawn beside it (not on it); 0 takes "
                                                       "that lesion for the carried one, a little out of register."),
    washout_min_brighter: str = typer.Option("0", "--washout-min-brighter",
                                             help="Comma-separated least a region an arterial scan drew as vessel, "
                                                  "and a portal or late scan as liver, must be brighter than the "
                                                  "liver in the arterial CT to be a lesion (HU; 0: never)."),
    washout_min_darker: str = typer.Option("5", "--washout-min-darker",
                                           help="Comma-separated least that place must be darker than the liver "
                                                "in the portal or late scan (HU)."),
    washout_min_volumes: str = typer.Option("0.3", "--washout-min-volumes",
                                            help="Comma-separated smallest such region (ml)."),
    vein_min_brighter: str = typer.Option("0", "--vein-min-brighter",
                                          help="Comma-separated least a place drawn as tumor must be brighter than "
                                               "the liver in a portal or late scan, while darker in the arterial "
                                               "one, to be a vein filling with contrast and become vessel (HU; 0: "
                                               "never)."),
    vein_min_darker: str = typer.Option("5", "--vein-min-darker",
                                        help="Comma-separated least that place must be darker than the liver in "
                                             "the arterial scan (HU)."),
    fluid_max: str = typer.Option("0", "--fluid-max-hu",
                                  help="Comma-separated highest median HU a place drawn as tumor may read in every "
                                       "CT of its day to be fluid (bile, a cyst) and become background (0: never)."),
    max_false: float = typer.Option(1.0, "--max-false-lesions", min=0.0,
                                    help="Most false lesions per validation scan the chosen rule may produce."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda; default LVT_DEVICE, else auto."),
    version: str = typer.Option(None, "--version", help="Version of the copy (default: the checkpoint's)."),
    cache: Path = typer.Option(None, "--cache", help="Folder keeping each scan as this checkpoint decodes it, so "
                               "a later grid on the same cohort skips the network (e.g. .cache/cross_phase)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Choose when a lesion in one phase of a day confirms a dropped candidate in another, when
    it is carried whole into a phase whose CT alone shows it, when arterial enhancement with
    later washout makes a lesion of a place neither phase drew as one, and when a place drawn as
    tumor, dark in the arterial phase and bright later, is a vein, and when one at water density
    in every phase is fluid (each off if it does not help on validation)."""
    device = setting_choice(device, "--device", "device")  # bad usage (exit 2) before any scan is read
    from training.calibrate_cross_phase import GRID_FIELDS, calibrate_cross_phase

    result = _per_case_progress("calibrating the cross-phase rule", lambda on_case: calibrate_cross_phase(
        checkpoint, cohort, out, _numbers("--min-peaks", min_peaks), _numbers("--max-distances", max_distances),
        _numbers("--min-volumes", min_volumes), _numbers("--carry-min-volumes", carry_min_volumes),
        _numbers("--carry-min-contrasts", carry_min_contrasts), _numbers("--carry-max-brighter", carry_max_brighter),
        _numbers("--carry-vessel-min-brighter", carry_vessel_min_brighter),
        _numbers("--washout-min-brighter", washout_min_brighter), _numbers("--washout-min-darker", washout_min_darker),
        _numbers("--washout-min-volumes", washout_min_volumes),
        _numbers("--carry-vessel-max-shell", carry_vessel_max_shell),
        _numbers("--carry-vessel-min-one-sided", carry_vessel_min_one_sided),
        _numbers("--carry-vessel-beside-tumor", carry_vessel_beside_tumor), _numbers("--vein-min-darker", vein_min_darker),
        _numbers("--vein-min-brighter", vein_min_brighter), _numbers("--fluid-max-hu", fluid_max), device, on_case=on_case, version=version,
        max_false_per_scan=max_false, cache=cache))
    if as_json:
        print_json(result)
        return
    chosen = _echo_grid(result, GRID_FIELDS, _cross_phase_rule)
    reused = f" ({result['decoded_from_cache']} decoded from the cache)" if cache is not None else ""
    typer.echo(f"chosen: {chosen}; {result['days']} days, {result['cases']} scans{reused}; wrote {result['out']}")


def _onto_vessels(row: dict[str, Any], defaults: Any) -> str:
    """The carrying onto vessel-drawn regions of one calibration row, as the terminal says it
    (rows of checkpoints calibrated before a field existed read as its default)."""
    shell = row.get("carry_vessel_max_shell_fraction", defaults.carry_vessel_max_shell_fraction)
    one_sided = row.get("carry_vessel_min_one_sidedness", defaults.carry_vessel_min_one_sidedness)
    sides = f", one-sided ≥ {one_sided:g}" if one_sided else ""
    beside = ", even beside a drawn lesion" if row.get("carry_vessel_beside_tumor", defaults.carry_vessel_beside_tumor) else ""
    return (f", or onto a region drawn as vessel ≥ {row['carry_vessel_min_brighter_hu']:g} HU brighter in an "
            f"arterial scan, its shell < {shell:.0%} vessel{sides}{beside}")


def _cross_phase_rule(row: dict[str, Any]) -> str:
    """One row of the cross-phase calibration, as the terminal says it."""
    from lvt_core.cross_phase import NO_BRIGHTNESS_LIMIT_HU, CrossPhaseRule

    parts = []
    if row["min_peak"]:
        parts.append(f"peak ≥ {row['min_peak']} within {row['max_distance_mm']} mm of another phase's lesion, "
                     f"≥ {row['min_volume_ml']} ml")
    if row["carry_min_volume_ml"]:
        brighter = row["carry_max_brighter_hu"]
        limit = ("darker" if not brighter else "darker or brighter" if brighter >= NO_BRIGHTNESS_LIMIT_HU
                 else f"darker, or brighter up to {brighter:g} HU")
        onto_vessels = _onto_vessels(row, CrossPhaseRule()) if row.get("carry_vessel_min_brighter_hu") else ""
        parts.append(f"lesions ≥ {row['carry_min_volume_ml']} ml carried where the CT is "
                     f"≥ {row['carry_min_contrast_hu']} HU {limit}{onto_vessels}")
    if row.get("washout_min_brighter_hu"):
        parts.append(f"arterial vessel-drawn regions ≥ {row['washout_min_volume_ml']} ml, "
                     f"≥ {row['washout_min_brighter_hu']:g} HU brighter, that wash out "
                     f"≥ {row['washout_min_darker_hu']:g} HU darker later")
    if row.get("vein_min_brighter_hu"):
        parts.append(f"tumor ≥ {row['vein_min_darker_hu']:g} HU darker in the arterial scan and "
                     f"≥ {row['vein_min_brighter_hu']:g} HU brighter later made vessel (a filling vein)")
    if row.get("fluid_max_hu"):
        parts.append(f"tumor at most {row['fluid_max_hu']:g} HU in every scan of the day made background (fluid)")
    return "; ".join(parts) or "off"


def qualify_bf16_command(
    checkpoint: Path = typer.Argument(..., help="Calibrated checkpoint (.pt) to qualify."),
    cohort: list[Path] = typer.Option(..., "--cohort", help="Validation phantom cohort, never the test "
                                      "cohort; repeat for several (each must agree)."),
    out: Path = typer.Option(..., "--out", help="Where to write the copy that runs in bfloat16 by default."),
    max_dsc_change: float = typer.Option(0.005, "--max-dsc-change", min=0.0,
                                         help="Largest change of mean liver, vessel or tumor DSC allowed."),
    max_extra_false: float = typer.Option(0.1, "--max-extra-false-lesions", min=0.0,
                                          help="Most extra false lesions per scan allowed in bfloat16."),
    version: str = typer.Option(None, "--version", help="Version of the copy (default: the checkpoint's)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score a model in float32 and bfloat16 on validation phantoms; if its figures agree, write
    a copy that runs in bfloat16 on CPUs with AMX or AVX-512 BF16 (2-3x faster)."""
    from training.qualify_precision import DSC_KEYS, Tolerances, qualify_bf16

    tolerances = Tolerances(dsc=max_dsc_change, false_lesions_per_scan=max_extra_false)
    result = _per_case_progress("scoring in float32 and bfloat16", lambda on_case: qualify_bf16(
        checkpoint, cohort, out, version, tolerances, on_case=on_case))
    if as_json:
        print_json(result)
    else:
        for entry in result["cohorts"]:
            for precision in ("fp32", "bf16"):
                figures = entry[precision]
                typer.echo(f"{entry['cohort']} ({entry['cases']} scans), {precision}: "
                           + ", ".join(f"{key} {figures[key]:.4f}" for key in DSC_KEYS)
                           + f", lesions ≥ 10 mm found {figures['lesions_10mm_found']} "
                           f"of {figures['lesions_10mm']}, false lesions per scan "
                           f"{figures['false_lesions_per_scan']:.2f}")
    if not result["qualified"]:
        raise UserError("bfloat16 changes what this model finds, so no copy was written:\n  "
                        + "\n  ".join(result["differences"]))
    if not as_json:
        typer.echo(f"qualified; wrote {result['out']}")


def fit_lesion_filter_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) whose tumor candidates to filter."),
    cohort: list[Path] = typer.Option(..., "--cohort", help="Phantom cohort used by neither training, "
                                      "calibration nor the test; repeat to pool several."),
    out: Path = typer.Option(..., "--out", help="Where to write the copy carrying the filter."),
    thresholds: str = typer.Option("0.3,0.2", "--thresholds",
                                   help="Comma-separated tumor thresholds whose candidates to learn from."),
    candidates_csv: Path = typer.Option(None, "--candidates-csv", help="Also write every candidate's features."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda; default LVT_DEVICE, else auto."),
    version: str = typer.Option(None, "--version", help="Version of the copy (default: the checkpoint's)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fit the false-lesion filter (a second look at each tumor component) on phantoms."""
    device = setting_choice(device, "--device", "device")  # bad usage (exit 2) before any scan is read
    from training.lesion_filter import fit_lesion_filter

    values = _numbers("--thresholds", thresholds)
    result = _per_case_progress("collecting candidates", lambda on_case: fit_lesion_filter(
        checkpoint, cohort, out, values, version, device, on_case=on_case, candidates_csv=candidates_csv))
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['candidates']} candidates ({result['true_candidates']} true lesions, "
               f"{result['false_candidates']} false); cross-validated ROC AUC {result['cv_roc_auc']} "
               f"over {result['cv_folds']} patient folds, on the fitting data {result['train_roc_auc']}")
    for name, weight in result["weights"].items():
        typer.echo(f"  {name:<20} {weight:+.3f}")
    typer.echo(f"wrote {result['out']}; choose its min lesion score with `lvt calibrate`")


def ensemble_command(
    checkpoints: list[Path] = typer.Argument(..., help="Two or more checkpoints of one architecture "
                                             "(e.g. the five folds of a training config)."),
    out: Path = typer.Option(..., "--out", help="Where to write the ensemble checkpoint."),
    version: str = typer.Option(None, "--version", help="Its version (default: the first's +ensembleN)."),
    name: str = typer.Option(None, "--name", help="Its name (default: the first's _ensemble)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Combine checkpoints into one whose networks' probabilities are averaged at inference."""
    from lvt_core.checkpoint import CheckpointError
    from lvt_core.ensemble import build_ensemble

    try:
        result = build_ensemble(checkpoints, out, version=version, name=name)
    except (CheckpointError, OSError) as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(result)
        return
    typer.echo(f"wrote {result['out']}: {result['networks']} networks, version {result['version']}, "
               f"{result['size_mb']} MB; its decisions are the first member's until "
               "`lvt calibrate` chooses them for the average")


@experiment_app.command("partial-labels")
def partial_labels(
    out: Path = typer.Option(Path("docs/experiments/partial_labels"), "--out", help="Result folder."),
    budget: str = typer.Option("small", "--budget", help="tiny (seconds), small (≤ 60 min CPU), medium (4× small's steps, ~80 min CPU per seed), full (GPU)."),
    cohort: Path = typer.Option(None, "--cohort", help="Existing phantom cohort; default: generate one."),
    seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds (default: the budget's)."),
    design: str = typer.Option("one", "--design", help="one: every part from one protocol; protocols: "
                               "FS part portal phase only, partial parts arterial + late, test all three."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The paper's ablation (MC vs MLx vs ML; 25 % FS, + PS, 100 % FS) on phantoms."""
    from training.experiment import BUDGETS, MODES, SETTINGS, run_experiment

    if budget not in BUDGETS:
        raise typer.BadParameter(f"--budget must be one of {list(BUDGETS)}")
    seed_list = tuple(int(s) for s in seeds.split(",")) if seeds else None
    n_runs = len(MODES) * len(SETTINGS) * len(seed_list or BUDGETS[budget].seeds)
    logging.getLogger("training").setLevel(logging.WARNING)
    try:
        with progress_bar() as progress:
            task = progress.add_task("ablation", total=n_runs)
            summary = run_experiment(out, budget, cohort, seed_list,
                                     on_run=lambda name: progress.advance(task), design=design)
    except (ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(summary)
    else:
        typer.echo((Path(summary["table"])).read_text())


def register(app: typer.Typer) -> None:
    """Add ``lvt train``, ``lvt evaluate-model`` and ``lvt experiment`` to the root app."""
    app.command("train")(train_command)
    app.command("evaluate-model")(evaluate_model_command)
    app.command("calibrate")(calibrate_command)
    app.command("calibrate-faint")(calibrate_faint_command)
    app.command("calibrate-cross-phase")(calibrate_cross_phase_command)
    app.command("qualify-bf16")(qualify_bf16_command)
    app.command("fit-lesion-filter")(fit_lesion_filter_command)
    app.command("ensemble")(ensemble_command)
    app.add_typer(experiment_app, name="experiment")
