"""`distinit figures`: the paper's Figs. 3-7 from the run folders `distinit demo` writes.

Each figure is a function (run folders, out folder) -> (PNG path, caption) that raises `Missing`
when its inputs are not there, so that one absent run skips one figure. Filters, t-SNE and
entropies read the first run folder; per-class gains average over all; curves overlay them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import yaml

from distinit.arguments import Parser
from distinit.data.corpus.record import comparability
from distinit.engine.checkpoint import backbone_state, load_checkpoint, read_checkpoint
from distinit.errors import UserError
from distinit.models.inflate import inflate_kernel
from distinit.optional import require

TSNE_ROWS = ("res3d_scratch", "res3d_distinit", "r2plus1d_scratch", "r2plus1d_distinit",
             "r2plus1d_supervised")
# The demo logs the training loss once per run (log_every is large) and held-out numbers once per
# epoch, so a panel may hold single points: they are drawn with markers.
CURVES = [  # (kind of run folder, metric, panel title)
    ("distill", "loss", "DistInit: distillation loss"),
    ("distill", "holdout_loss_t0", "DistInit: held-out loss"),
    ("distill", "holdout_agree_t0", "DistInit: held-out agreement with teacher (%)"),
    ("supervised", "loss", "Supervised pretraining: loss"),
    ("image", "loss", "2D image nets: loss"),
    ("finetune", "loss", "Fine-tuning: loss"),
    ("finetune", "test_top1", "Fine-tuning: test video top-1 (%)"),
]


class Missing(Exception):
    """A figure's inputs are not in the run folders; the figure is skipped."""


def _pyplot():
    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")  # files only: no display needed, and no import-time side effect
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, width: float, height: float, cols: int = 3):
    """A figure with n panels, at most `cols` per row; the unused axes are hidden."""
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat[:n]


def _save(fig, path: Path, bottom: float = 0.0) -> Path:
    fig.tight_layout(rect=(0, bottom, 1, 1))  # `bottom`: room for a figure legend
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as e:  # e.g. a run still writing it
        raise Missing(f"cannot read {path}: {e}") from None


def _conv1(path: Path) -> torch.Tensor:
    """The student's first conv kernel (O, C, T, H, W) from a training run's checkpoint."""
    state = backbone_state(load_checkpoint(path))
    if "stem.0.weight" not in state:
        raise Missing(f"{path} holds no student stem (stem.0.weight of its backbone)")
    return state["stem.0.weight"].float()


def temporal_variation(w: torch.Tensor) -> float:
    """Mean over filters of (std over time) / (std of the whole filter), for a kernel
    (O, C, T, H, W): 0 when every time step is the same (inflation), > 0 when filters move."""
    w = w.double()
    over_time = w.std(dim=2, unbiased=False).flatten(1).mean(1)  # (O,)
    overall = w.flatten(1).std(dim=1, unbiased=False).clamp_min(1e-12)  # (O,)
    return (over_time / overall).mean().item()


def _montage(w: torch.Tensor, cols: int) -> np.ndarray:
    """(O, 3, T, H, W) kernel -> one RGB image: `cols` filters per row, each filter's T time
    steps side by side, each filter scaled to [0, 1] over all its time steps (so that its
    change over time stays visible)."""
    lo = w.flatten(1).min(1).values.view(-1, 1, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(-1, 1, 1, 1, 1)
    tiles = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 4, 1).numpy()  # (O,T,H,W,3)
    n, t, h, wd, _ = tiles.shape
    cell = t * (wd + 1) + 1  # one more white pixel between filters than between time steps
    img = np.ones((-(-n // cols) * (h + 1), cols * cell, 3))
    for i in range(n):
        y, x = (i // cols) * (h + 1), (i % cols) * cell
        for j in range(t):
            img[y:y + h, x + j * (wd + 1):x + j * (wd + 1) + wd] = tiles[i, j]
    return img


def _filter_panels(panels: dict[str, torch.Tensor], cols: int, title: str, path: Path) -> Path:
    images = {name: _montage(w, cols) for name, w in panels.items()}
    h, w = next(iter(images.values())).shape[:2]
    fig, axes = _grid(len(images), 3.2, min(8.0, 3.2 * h / w + 0.8))
    for ax, (name, img) in zip(axes, images.items()):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def conv1_filters(runs: list[Path], out: Path) -> tuple[Path, str]:
    """Fig. 3: Res3D conv1, DistInit vs the inflated 2D conv1; one row per filter, one column
    per time step."""
    distilled = runs[0] / "r3d_18_distill" / "last.pt"
    source = runs[0] / "inflation_source" / "teacher.pt"
    panels = {"DistInit": _conv1(distilled)} if distilled.is_file() else {}
    conv1 = read_checkpoint(source)[0].get("conv1.weight") if source.is_file() else None
    if conv1 is not None:  # inflated as `inflate` does it, over the student's kt (demo: 3)
        kt = panels["DistInit"].shape[2] if panels else 3
        panels["ImageNet-analog inflated"] = inflate_kernel(conv1.float(), kt)  # (O, 3, kt, kh, kw)
    if not panels:
        raise Missing(f"no {distilled} or {source}")
    tv = {name: temporal_variation(w) for name, w in panels.items()}
    titled = {f"{name}\ntemporal variation {tv[name]:.3f}": w for name, w in panels.items()}
    path = _filter_panels(titled, -(-len(next(iter(panels.values()))) // 16),
                          "Res3D conv1 (columns: time steps)", out / "conv1_filters.png")
    return path, ("Res3D conv1 filters over time (Fig. 3). Temporal variation (mean over filters "
                  "of std over time / std overall; 0 = the same at every step): "
                  + ", ".join(f"{name} {v:.3f}" for name, v in tv.items()) + ".")


def conv1_r2plus1d(runs: list[Path], out: Path) -> tuple[Path, str]:
    """Fig. 4: the R(2+1)D stem's spatial (1, k, k) conv, DistInit vs supervised pretraining."""
    panels = {}
    for name, folder in (("DistInit", "r2plus1d_18_distill"),
                         ("Supervised", "r2plus1d_18_supervised")):
        if (runs[0] / folder / "last.pt").is_file():
            panels[name] = _conv1(runs[0] / folder / "last.pt")  # (O, 3, 1, k, k)
    if not panels:
        raise Missing(f"no r2plus1d_18_distill/ or r2plus1d_18_supervised/last.pt in {runs[0]}")
    n = len(next(iter(panels.values())))
    path = _filter_panels(panels, math.ceil(math.sqrt(n)), "R(2+1)D spatial conv1",
                          out / "conv1_r2plus1d.png")
    return path, f"R(2+1)D stem's spatial conv1 (Fig. 4), {n} filters: {' vs '.join(panels)}."


def tsne(runs: list[Path], out: Path) -> tuple[Path, str]:
    """Fig. 5: t-SNE of the initial weights' pooled features of the labeled test videos."""
    TSNE = require("sklearn.manifold", "plots").TSNE
    silhouette_score = require("sklearn.metrics", "plots").silhouette_score

    found = {}
    for row in TSNE_ROWS:
        path = runs[0] / f"finetune_{row}" / "frozen_features.pt"
        data = load_checkpoint(path) if path.is_file() else {}
        if len(data.get("test", [])) >= 5:  # t-SNE needs a few points
            found[row] = data
    if not found:
        raise Missing(f"no finetune_*/frozen_features.pt with 5 or more videos in {runs[0]}")
    plt = _pyplot()
    fig, axes = _grid(len(found), 4, 4)
    scores = {}
    for ax, (row, data) in zip(axes, found.items()):
        x, y = data["test"].float().numpy(), data["test_labels"].numpy()  # (N, D), (N,)
        xy = TSNE(2, perplexity=min(30.0, len(x) / 4), init="pca", random_state=0).fit_transform(x)
        ax.scatter(xy[:, 0], xy[:, 1], c=plt.get_cmap("tab20")(y % 20), s=12)
        if 1 < len(set(y.tolist())) < len(x):
            scores[row] = silhouette_score(x, y)
        ax.set_title(f"{row} (silhouette {scores.get(row, float('nan')):.2f})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    classes = next(iter(found.values())).get("classes", [])
    if 0 < len(classes) <= 20:  # tab20 has 20 colours: a legend beyond that would lie
        cmap = plt.get_cmap("tab20")
        handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(i))
                   for i in range(len(classes))]
        fig.legend(handles, classes, loc="lower center", ncol=min(6, len(classes)), fontsize=7)
    path = _save(fig, out / "tsne.png", bottom=0.03 * -(-len(classes) // 6) if classes else 0.0)
    return path, ("t-SNE of the initial (not fine-tuned) features of the test videos, coloured by "
                  "action (Fig. 5). Silhouette of the action classes in feature space: "
                  + ", ".join(f"{row} {s:.3f}" for row, s in scores.items()) + ".")


def _max_entropy_nats(run: Path) -> float | None:
    """ln K for the demo teacher's K classes (the entropy of a uniform target); None if unknown."""
    path = run / "teacher" / "teacher.pt"
    classes = load_checkpoint(path).get("classes") if path.is_file() else None
    return math.log(len(classes)) if classes else None


def entropy_hist(runs: list[Path], out: Path) -> tuple[Path, str]:
    """Fig. 6: the teacher's target entropy of every held-out clip, and what thresholds drop."""
    found = {}
    for folder in ("r3d_18_distill", "r2plus1d_18_distill"):
        ents = (_json(runs[0] / folder / "results.json").get("entropies") or [[]])[0]
        if ents:
            cfg_path = runs[0] / folder / "config.yaml"
            found[folder] = (np.array(ents), yaml.safe_load(cfg_path.read_text()) if
                             cfg_path.is_file() else {})
    if not found:
        raise Missing(f"no */results.json with 'entropies' in {runs[0]}")
    ln_k = _max_entropy_nats(runs[0])
    fig, axes = _grid(len(found), 5.5, 3.8)
    notes = []
    for ax, (folder, (ents, cfg)) in zip(axes, found.items()):
        top = ln_k or float(ents.max())
        ax.hist(ents, bins=np.linspace(0, top, 31), color="0.6")
        thresholds = {f"q{q}": float(np.quantile(ents, q / 100)) for q in (25, 50, 75)}
        max_entropy = float((cfg.get("distill") or {}).get("max_entropy") or 0)
        if max_entropy > 0:
            thresholds["distill.max_entropy"] = max_entropy
        for (name, t), color in zip(thresholds.items(), ("C0", "C1", "C2", "C3")):
            ax.axvline(t, color=color, label=f"{name} = {t:.2f}: drops {(ents > t).mean():.0%}")
        ax.set_xlim(0, top)
        ax.set_xlabel("teacher target entropy (nats)" + (f"; ln K = {ln_k:.2f}" if ln_k else ""))
        ax.set_ylabel("held-out clips")
        ax.set_title(folder, fontsize=9)
        ax.legend(fontsize=7)
        notes.append(f"{folder}: {len(ents)} clips, median {np.median(ents):.2f} nats"
                     + (f" of ln K = {ln_k:.2f}" if ln_k else ""))
    path = _save(fig, out / "entropy_hist.png")
    return path, (f"Teacher target entropy on held-out corpus clips (Fig. 6), with the share of "
                  f"clips each threshold would drop; {'; '.join(notes)}.")


def per_class_gain(runs: list[Path], out: Path) -> tuple[Path, str]:
    """Fig. 7: per-class video top-1 of Res3D DistInit minus inflation, averaged over runs."""
    gains: dict[str, list[float]] = {}  # class -> one gain per run that has both rows
    used = 0
    corpora: dict[str, dict | None] = {}  # the runs compared, and the videos each read
    for run in runs:
        dist = _json(run / "finetune_res3d_distinit" / "results.json")
        infl = _json(run / "finetune_res3d_inflated" / "results.json")
        if "per_class_top1" not in dist or "per_class_top1" not in infl:
            continue
        used += 1
        corpora.update({str(run / "finetune_res3d_distinit"): dist.get("corpus"),
                        str(run / "finetune_res3d_inflated"): infl.get("corpus")})
        base = dict(zip(infl["classes"], infl["per_class_top1"]))
        for name, acc in zip(dist["classes"], dist["per_class_top1"]):
            if acc is not None and base.get(name) is not None:  # None: no test video
                gains.setdefault(name, []).append(acc - base[name])
    if not gains:
        raise Missing("no finetune_res3d_distinit and finetune_res3d_inflated results.json with "
                      "per_class_top1")
    warning = comparability(corpora)
    if warning:
        print(warning, flush=True)
    mean = sorted(((float(np.mean(v)), k) for k, v in gains.items()), reverse=True)
    fig, ax = _pyplot().subplots(figsize=(max(5.0, 0.3 * len(mean)), 4))
    values = [g for g, _ in mean]
    ax.bar(range(len(mean)), values, color=["C2" if g >= 0 else "C3" for g in values])
    ax.set_xticks(range(len(mean)), [k for _, k in mean], rotation=90, fontsize=7)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("top-1 gain (points)")
    ax.set_title(f"Res3D DistInit - inflated, per class (mean of {used} run(s))", fontsize=9)
    path = _save(fig, out / "per_class_gain.png")
    better = sum(g > 0 for g in values)
    return path, (f"Per-class video top-1 of Res3D DistInit minus ImageNet-analog inflation, "
                  f"mean of {used} run(s) (Fig. 7); mean gain {np.mean(values):+.1f} points, "
                  f"{better} of {len(mean)} classes better, best {mean[0][1]} "
                  f"({mean[0][0]:+.1f}), worst {mean[-1][1]} ({mean[-1][0]:+.1f}).")


def _kind(folder: str) -> str:
    if folder.endswith("_distill"):
        return "distill"
    if folder.startswith("finetune_"):
        return "finetune"
    return "supervised" if folder.endswith("_supervised") else "image"


def curves(runs: list[Path], out: Path) -> tuple[Path, str]:
    """Training curves of every run folder (one subplot per kind and metric); seeds overlay."""
    lines: dict[int, dict[str, list]] = {}  # panel -> folder -> [(steps, values), ...]
    for run in runs:
        for path in sorted(run.glob("*/metrics.jsonl")):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for i, (kind, key, _) in enumerate(CURVES):
                pts = [(r["step"], r[key]) for r in rows if _kind(path.parent.name) == kind
                       and isinstance(r.get(key), int | float) and "step" in r]
                if pts:
                    lines.setdefault(i, {}).setdefault(path.parent.name, []).append(list(zip(*pts)))
    if not lines:
        raise Missing("no */metrics.jsonl with a loss in the run folders")
    fig, axes = _grid(len(lines), 4.5, 3.5)
    for ax, (i, folders) in zip(axes, sorted(lines.items())):
        for color, (folder, seeds) in enumerate(folders.items()):
            for s, (steps, values) in enumerate(seeds):  # same colour per folder across seeds
                ax.plot(steps, values, color=f"C{color % 10}", lw=1, marker=".", alpha=0.8,
                        label=folder if s == 0 else None)
        ax.set_title(CURVES[i][2], fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    path = _save(fig, out / "curves.png")
    return path, (f"Training curves from every metrics.jsonl of {len(runs)} run folder(s), one "
                  f"colour per folder: {', '.join(CURVES[i][2] for i in sorted(lines))}.")


FIGURES = {"conv1_filters": conv1_filters, "conv1_r2plus1d": conv1_r2plus1d, "tsne": tsne,
           "entropy_hist": entropy_hist, "per_class_gain": per_class_gain, "curves": curves}


def _check_runs(runs: list[Path]) -> None:
    for run in runs:
        stages = [p for p in run.iterdir() if p.is_dir() and (_kind(p.name) != "image" or p.name in
                  ("teacher", "inflation_source", "scene_net"))] if run.is_dir() else []
        if not stages:
            why = "it holds no teacher/, *_distill/ or finetune_*/" if run.is_dir() else "not found"
            raise UserError(f"{run} is not a run folder of `distinit demo` ({why}); give the "
                            "folder of one seed, e.g. runs/demo/seed0")


def make_figures(run_dirs: list[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write every figure the run folders have inputs for, and figures.md with their captions;
    returns name -> PNG path. A figure whose inputs are missing is skipped with a note."""
    runs = [Path(r) for r in run_dirs]
    _check_runs(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made, md = {}, ["# Figures", "", f"Run folders: {', '.join(str(r) for r in runs)}", ""]
    for name, figure in FIGURES.items():
        try:
            path, caption = figure(runs, out)
        except (Missing, UserError) as e:  # absent or unreadable inputs: skip this figure only
            print(f"figures: skipped {name}: {e}")
            md += [f"- {name}: skipped ({e})", ""]
            continue
        made[name] = path
        md += [f"## {path.name}", "", f"![{name}]({path.name})", "", caption, ""]
    (out / "figures.md").write_text("\n".join(md))
    return made


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit figures", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="`distinit demo` run folders, one per seed")
    parser.add_argument("--out", default="", help="output folder (default: FIRST_RUN_DIR/figures)")
    ns = parser.parse_args(argv)
    out = Path(ns.out or Path(ns.run_dirs[0]) / "figures")
    for name, path in make_figures(ns.run_dirs, out).items():
        print(f"{name}: {path}")
    print(f"captions: {out / 'figures.md'}")
    return 0
