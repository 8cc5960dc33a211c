"""The partial-label ablation of paper Sections 4.1–4.2 on the synthetic cohort.

One fully labelled cohort is split by patient into five equal parts: test, full supervision
(FS), tumor-only, vessel-only and liver-only (whole-organ liver masks, no cutouts). Each of
MC, MLx and ML trains under three settings — 25 % FS alone, 25 % FS + the partial parts
(PS), and 100 % FS (the partial parts with their full labels) — for several seeds, and is
scored on the test part: DSC, voxel precision and recall per class, lesion sensitivity.
Results go to ``results.csv`` (one row per run), ``table.md``/``table.csv`` (mean ± std
over seeds, shaped like the paper's Tables 1–2) and ``dsc.png``.

Design ``one`` draws every part from one protocol, so the partial parts differ from the FS
part only in their labels. Design ``protocols`` makes the sources differ as the paper's public
datasets do: the FS part is scanned in the portal phase only, the partial parts in the arterial
and late phases, and the test holds all three phases (and is also scored per phase).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from lvt_core.labels import LIVER, TUMOR, VESSEL
from training.config import DatasetSpec, OptimizerSpec, TrainConfig
from training.datasets import Case, load_cases
from training.preprocess import preprocess
from training.splits import kfold_groups
from training.train import predict_array, train

log = logging.getLogger(__name__)
MODES = ("MC", "MLx", "ML")
SETTINGS = ("25% FS", "25% FS + PS", "100% FS")
CLASSES = ("liver", "vessel", "tumor")
DESIGNS = ("one", "protocols")
FS_PHASE = "portal"
PARTIAL_PHASES = ("arterial", "late")


@dataclass(frozen=True)
class Budget:
    """How big the experiment is: cohort, network, patches, steps and seeds."""

    patients: int
    phantom_size: str
    spacing_mm: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    filters: tuple[int, ...]
    steps: int
    batch_size: int
    seeds: tuple[int, ...]
    variant: str = "residual_bn"
    foreground_prob: float = 1 / 3


BUDGETS: dict[str, Budget] = {
    # seconds: the end-to-end test of the pipeline, numbers meaningless
    "tiny": Budget(5, "tiny", (4.0, 4.0, 4.0), (32, 32, 32), (4, 8, 16), 2, 1, (0,)),
    # ≤ 60 min on 2 CPU cores: 3 modes × 3 settings × 3 seeds = 27 runs of 800 steps of
    # 2 × 32³ patches at 3 mm (half centred on foreground), residual encoder with instance
    # norm (batch norm over 2 patches mis-estimates its statistics). At 160 steps no mode
    # learned vessels or tumors; a pilot at 800 steps (ML, 100 % FS) reached liver 0.75,
    # vessel 0.47, tumor 0.09 DSC.
    "small": Budget(20, "demo", (3.0, 3.0, 3.0), (32, 32, 32), (8, 16, 32, 64), 800, 2, (0, 1, 2),
                    variant="residual_in", foreground_prob=0.5),
    # small with four times the steps, so that each of the 100 % FS cases is seen as often as
    # each 25 % FS case is at small: does the partial-label gain appear once the larger training
    # sets are not starved of steps? About 9 min per run on 2 CPU cores (a seed: 80 min);
    # `--seeds 1` adds a seed to an existing result folder later.
    "medium": Budget(20, "demo", (3.0, 3.0, 3.0), (32, 32, 32), (8, 16, 32, 64), 3200, 2, (0, 1),
                     variant="residual_in", foreground_prob=0.5),
    # GPU-sized: closer to the paper
    "full": Budget(40, "demo", (1.5, 1.5, 1.5), (96, 96, 96), (32, 64, 128, 256), 3000, 2, (0, 1, 2),
                   variant="residual_in", foreground_prob=0.5),
}

_ONLY: dict[str, tuple[tuple[str, ...], dict[int, int]]] = {
    "tumor": (("tumor",), {TUMOR: TUMOR}),
    "vessel": (("vessel",), {VESSEL: VESSEL}),
    "liver": (("liver",), {LIVER: LIVER, VESSEL: LIVER, TUMOR: LIVER}),  # no cutouts
}


def partial_case(case: Case, only: str) -> Case:
    """``case`` annotated for one class: tumor-only, vessel-only, or liver-only (whole organ)."""
    annotated, mapping = _ONLY[only]
    return replace(case, case_id=f"{case.case_id}_{only}only", source=f"PS_{only}",
                   annotated=annotated, mapping=mapping)


def split_parts(cases: list[Case], seed: int) -> dict[str, list[Case]]:
    """Five patient-disjoint parts: test, fs, tumor, vessel, liver (the last three partial)."""
    folds = kfold_groups([c.split_group for c in cases], 5, seed)
    names = ("test", "fs", "tumor", "vessel", "liver")
    parts = {name: [c for c in cases if c.split_group in set(fold)] for name, fold in zip(names, folds, strict=True)}
    empty = [name for name, part in parts.items() if not part]
    if empty:
        raise ValueError(f"the cohort has too few patients for five parts (empty: {empty})")
    return parts


def protocol_parts(parts: dict[str, list[Case]]) -> dict[str, list[Case]]:
    """The ``protocols`` design: the FS part keeps its portal scans, the partial parts their
    arterial and late scans, and the test keeps every phase."""
    kept = {"test": list(parts["test"]), "fs": [c for c in parts["fs"] if c.phase == FS_PHASE]}
    for name in ("tumor", "vessel", "liver"):
        kept[name] = [c for c in parts[name] if c.phase in PARTIAL_PHASES]
    empty = [name for name, part in kept.items() if not part]
    if empty:
        raise ValueError(f"design 'protocols' needs portal, arterial and late scans of every patient; "
                         f"parts without their phases: {empty} (render the cohort with --phases 3)")
    return kept


def training_set(parts: dict[str, list[Case]], setting: str) -> list[Case]:
    """The training cases of one setting."""
    if setting == "25% FS":
        return list(parts["fs"])
    if setting == "25% FS + PS":
        return list(parts["fs"]) + [partial_case(c, only) for only in ("tumor", "vessel", "liver")
                                    for c in parts[only]]
    return list(parts["fs"]) + parts["tumor"] + parts["vessel"] + parts["liver"]


def run_config(budget: Budget, mode: str, seed: int, out: Path, cache: Path) -> TrainConfig:
    """The training config of one run (AdamW + cosine warm-up, residual encoder)."""
    return TrainConfig(
        name=f"ablation-{mode}", mode=mode, seed=seed, output_dir=out, cache_dir=cache,
        datasets=[DatasetSpec(source="synthetic", path=out)],
        spacing_mm=list(budget.spacing_mm), patch_size=list(budget.patch_size),
        batch_size=budget.batch_size, epochs=1, steps_per_epoch=budget.steps,
        checkpoint_every=max(1, budget.steps), fp16_checkpoint=False,
        foreground_prob=budget.foreground_prob,
        network={"variant": budget.variant, "filters": list(budget.filters), "deep_supr_num": 1},
        optimizer=OptimizerSpec(name="adamw", lr=3e-3, weight_decay=1e-4,
                                warmup_steps=max(1, budget.steps // 10)),
    )


def evaluate_run(config: TrainConfig, model: Any, test: list[Case]) -> dict[str, float]:
    """Mean metrics over the test cases at training spacing, after the largest-liver step."""
    import torch

    from lvt_core.metrics import evaluate_pair, mean_metrics
    from lvt_core.postprocess import keep_liver_component

    results = []
    phases = []
    for case in test:
        prepared = preprocess(case, tuple(config.spacing_mm), config.cache_dir, config.antialiased)
        # The product's post-processing (one liver component), the same for every mode.
        pred = keep_liver_component(predict_array(model, config, prepared.image, torch.device("cpu")))
        ref = sitk.GetImageFromArray(np.asarray(prepared.labels))
        ref.SetSpacing(tuple(config.spacing_mm))
        pred_image = sitk.GetImageFromArray(pred)
        pred_image.CopyInformation(ref)
        results.append(evaluate_pair(pred_image, ref, min_lesion_voxels=1))  # as the committed tables were scored
        phases.append(case.phase)
    mean = mean_metrics(results)
    row: dict[str, float] = {}
    for name in CLASSES:
        for key in ("dsc", "precision", "recall"):
            row[f"{key}_{name}"] = mean[name][key]
    row["lesion_sensitivity"] = mean["lesion_sensitivity"]
    if len(set(phases)) > 1:  # sources that differ in protocol: how each phase fares
        for phase in sorted(set(phases)):
            of_phase = mean_metrics([r for r, p in zip(results, phases, strict=True) if p == phase])
            for name in CLASSES:
                row[f"dsc_{name}@{phase}"] = of_phase[name]["dsc"]
    return row


def run_experiment(
    out: str | Path, budget: str = "small", cohort: str | Path | None = None,
    seeds: tuple[int, ...] | None = None, on_run: Callable[[str], None] | None = None,
    design: str = "one",
) -> dict[str, Any]:
    """Run every mode × setting × seed; write the tables and the plot into ``out``."""
    import torch

    from lvt_core.network import build_network

    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}: choose one of {', '.join(DESIGNS)}")
    spec = BUDGETS[budget]
    out = Path(out)
    rows = read_rows(out / "results.csv")
    earlier = {r.get("design") or "one" for r in rows}
    if earlier - {design}:
        raise ValueError(f"{out / 'results.csv'} holds runs of design {sorted(earlier)[0]!r}, not "
                         f"{design!r}: give this design its own --out folder")
    check_budget(out, rows, budget)
    out.mkdir(parents=True, exist_ok=True)
    cohort_dir = Path(cohort) if cohort else out / "cohort"
    if not (cohort_dir / "manifest.csv").is_file():
        from lvt_core.phantom import CohortConfig, generate_cohort

        phases = 1 + len(PARTIAL_PHASES) if design == "protocols" else 1
        generate_cohort(cohort_dir, CohortConfig(patients=spec.patients, timepoints=1, phases=phases,
                                                  size=spec.phantom_size, seed=12345),
                        workers=os.cpu_count() or 1)
    cases = load_cases("synthetic", cohort_dir)
    done = {(str(r["seed"]), r["setting"], r["mode"]) for r in rows if r["budget"] == budget}
    started = time.perf_counter()
    for seed in seeds or spec.seeds:
        parts = split_parts(cases, seed)
        if design == "protocols":
            parts = protocol_parts(parts)
        for setting in SETTINGS:
            for mode in MODES:
                if (str(seed), setting, mode) in done:
                    continue  # finished by an earlier, interrupted invocation
                run_dir = out / "runs" / f"seed{seed}" / setting.replace("%", "pct").replace(" ", "").replace("+", "_") / mode
                config = run_config(spec, mode, seed, run_dir, out / "cache")
                t0 = time.perf_counter()
                result = train(config, cases=training_set(parts, setting), val_cases=[])
                from lvt_core.checkpoint import load_checkpoint

                state, meta = load_checkpoint(result.checkpoint)  # type: ignore[arg-type]
                model = build_network(meta["network"])
                model.load_state_dict(state)
                metrics = evaluate_run(config, model, parts["test"])
                rows.append({"seed": seed, "budget": budget, "design": design, "setting": setting, "mode": mode,
                             "train_cases": len(training_set(parts, setting)),
                             "seconds": round(time.perf_counter() - t0, 1), **metrics})
                write_rows(out / "results.csv", rows)
                if on_run:
                    on_run(f"seed {seed} {setting} {mode}")
                del model
                torch.set_num_threads(torch.get_num_threads())
    table = summarize(rows)
    write_rows(out / "table.csv", table)
    (out / "table.md").write_text(markdown_table(table, spec, budget, rows, design))
    plot(table, out / "dsc.png")
    by_phase = phase_keys(rows)
    if by_phase:
        plot_by_phase(table, by_phase, out / "dsc_by_phase.png")
    return {"out": str(out), "runs": len(rows), "budget": budget,
            "seconds": round(time.perf_counter() - started, 1),
            "table": str(out / "table.md"), "results": str(out / "results.csv")}


def table_budget(out: Path) -> str | None:
    """The budget named in the heading of ``out``'s ``table.md`` (None without one): results
    written before ``results.csv`` had a ``budget`` column are read as that budget."""
    path = out / "table.md"
    if not path.is_file():
        return None
    match = re.search(r"^# Partial-label ablation \(budget `([^`]+)`", path.read_text(encoding="utf-8"), re.M)
    return match.group(1) if match else None


def check_budget(out: Path, rows: list[dict[str, Any]], budget: str) -> None:
    """Refuse a result folder that holds another budget's runs, before anything is written.

    Runs were once counted done by seed, setting and mode alone, so ``--budget tiny`` in the
    committed small folder trained nothing and relabelled its table ``tiny``. Rows without a
    ``budget`` column take the budget of the folder's table.md (and are given it here).
    """
    recorded = table_budget(out)
    unlabelled = [r for r in rows if not r.get("budget")]
    if unlabelled and recorded is None:
        raise ValueError(f"{out / 'results.csv'} does not say which budget its runs used (no budget "
                         f"column, no table.md naming one): give budget {budget!r} its own --out folder")
    for row in unlabelled:
        row["budget"] = recorded
    budgets = {r["budget"] for r in rows} | ({recorded} if recorded else set())
    if budgets - {budget}:
        raise ValueError(f"{out} holds results of budget {sorted(budgets - {budget})[0]!r}, not "
                         f"{budget!r}: give this budget its own --out folder")


METRIC_KEYS = [f"{k}_{c}" for k in ("dsc", "precision", "recall") for c in CLASSES] + ["lesion_sensitivity"]


def phase_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The per-phase DSC columns (``dsc_<class>@<phase>``) the runs carry, class-major."""
    keys = {k for r in rows for k in r if "@" in k and r[k] not in ("", None)}
    phases = sorted({k.split("@")[1] for k in keys}, key=lambda p: (p != FS_PHASE, p))
    return [f"dsc_{c}@{p}" for c in CLASSES for p in phases if f"dsc_{c}@{p}" in keys]


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds per setting and mode."""
    table = []
    keys = METRIC_KEYS + phase_keys(rows)
    for setting in SETTINGS:
        for mode in MODES:
            group = [r for r in rows if r["setting"] == setting and r["mode"] == mode]
            if not group:
                continue
            row: dict[str, Any] = {"setting": setting, "mode": mode, "seeds": len(group)}
            for key in keys:
                values = np.array([float(r[key]) for r in group])
                row[key] = round(float(values.mean()), 4)
                row[f"{key}_std"] = round(float(values.std()), 4)
            table.append(row)
    return table


DESIGN_NOTES = {
    "protocols": "Design `protocols`: the FS part is scanned in the portal phase only, the partial "
                 "parts in the arterial and late phases; the test holds all three phases.",
}


def _cell(row: dict[str, Any], key: str) -> str:
    # one seed has no spread to show, and "± 0.000" would claim one
    return f"{row[key]:.3f} ± {row[key + '_std']:.3f}" if row["seeds"] > 1 else f"{row[key]:.3f}"


def markdown_table(table: list[dict[str, Any]], spec: Budget, budget: str, rows: list[dict[str, Any]],
                   design: str = "one") -> str:
    """Tables 1–2 layout: rows setting × mode, DSC / precision / recall per class, lesions;
    with test scans of several phases, a second table of DSC per phase.

    The seeds and the total time are read from the runs themselves, so a table finished over
    several interrupted invocations states what was actually run.
    """
    seeds = sorted({int(r["seed"]) for r in rows})
    minutes = sum(float(r["seconds"]) for r in rows) / 60
    head = ["setting", "mode"] + [f"DSC {c[0].upper()}" for c in CLASSES] + \
        [f"Prec {c[0].upper()}" for c in CLASSES] + [f"Rec {c[0].upper()}" for c in CLASSES] + ["Lesion sens."]
    title = f"budget `{budget}`" if design == "one" else f"budget `{budget}`, design `{design}`"
    lines = [
        f"# Partial-label ablation ({title})",
        "",
        f"{spec.patients} phantom patients, 5 parts; {spec.steps} steps × batch {spec.batch_size}, "
        f"patch {list(spec.patch_size)} at {list(spec.spacing_mm)} mm, filters {list(spec.filters)}, "
        f"seeds {seeds}; {'mean ± std over seeds' if len(seeds) > 1 else 'one seed, so no spread'}; {len(rows)} runs, {minutes:.1f} min of training "
        "and scoring in all.",
    ]
    if design in DESIGN_NOTES:
        lines += ["", DESIGN_NOTES[design]]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([row["setting"], row["mode"]] + [_cell(row, k) for k in METRIC_KEYS]) + " |"
              for row in table]
    by_phase = phase_keys(rows)
    if by_phase:
        phase_head = ["setting", "mode"] + [f"DSC {k[len('dsc_')].upper()} {k.split('@')[1]}" for k in by_phase]
        lines += ["", "DSC per test phase:", "", "| " + " | ".join(phase_head) + " |",
                  "|" + "---|" * len(phase_head)]
        lines += ["| " + " | ".join([row["setting"], row["mode"]] + [_cell(row, k) for k in by_phase]) + " |"
                  for row in table]
    return "\n".join(lines) + "\n"


def _mode_bars(ax: Any, table: list[dict[str, Any]], setting: str, keys: list[str], ticks: list[str]) -> None:
    """One setting's panel: a group of bars per key (mean ± std over seeds), one bar per mode."""
    for i, row in enumerate(r for r in table if r["setting"] == setting):
        x = np.arange(len(keys)) + (i - 1) * 0.27
        ax.bar(x, [row[k] for k in keys], 0.27, yerr=[row[f"{k}_std"] for k in keys], label=row["mode"])
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set_ylim(0, 1)


def plot(table: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: DSC per class, one panel per setting, one bar per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(12, 3.5), sharey=True)
    for ax, setting in zip(axes, SETTINGS, strict=True):
        _mode_bars(ax, table, setting, [f"dsc_{c}" for c in CLASSES], list(CLASSES))
        ax.set_title(setting)
    axes[0].set_ylabel("DSC")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_by_phase(table: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """One panel per class and setting: DSC per test phase, one bar per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = list(dict.fromkeys(k.split("@")[1] for k in keys))
    fig, axes = plt.subplots(len(CLASSES), len(SETTINGS), figsize=(12, 8), sharey=True, squeeze=False)
    for r, name in enumerate(CLASSES):
        for c, setting in enumerate(SETTINGS):
            _mode_bars(axes[r][c], table, setting, [f"dsc_{name}@{p}" for p in phases], phases)
            if r == 0:
                axes[r][c].set_title(setting)
            if c == 0:
                axes[r][c].set_ylabel(f"{name} DSC")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels))  # above the panels, not on a bar
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an earlier run's ``results.csv`` (empty when absent), so a rerun resumes."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """CSV with the union of keys as header."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
