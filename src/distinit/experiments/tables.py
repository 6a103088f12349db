"""Tables of experiment results: means and spreads over seeds, each claim's verdict, Markdown,
and the sections of docs/REPRODUCTION.md that `distinit reproduce` rewrites."""

from __future__ import annotations

import math
from pathlib import Path

from distinit.data.corpus import record as corpus
from distinit.experiments import diagnostics
from distinit.experiments.claims import Claim, mean_std, verdict_line

DEMO_COLUMNS = ("clip_acc", "top1", "top5", "knn1", "knn20", "probe")
DEMO_HEADER = ("| Model | Initialization | Per clip | Top 1 | Top 5 | kNN-1 | kNN-20 | Linear probe "
               "| Paper top 1 |\n|---|---|---|---|---|---|---|---|---|")


def corpus_lines(named: dict[str, dict | None], what: str = "rows") -> list[str]:
    """Lines under a table of fine-tuned runs (`name -> results.json corpus`): the labeled videos
    they were fine-tuned and tested on (the first 12 hex digits of the fingerprint, videos
    (missing)), and a warning when two runs read different ones. A pretraining corpus ("pretrain")
    is what an experiment may vary, so it is not compared here."""
    tuned = {name: {k: v for k, v in corpus.parts(c).items() if k != "pretrain"}
             for name, c in named.items()}
    descs = list(dict.fromkeys(corpus.describe(c) for c in tuned.values() if c))
    lines = [f"Corpus (fingerprint, videos (missing)): {descs[0]}."] if len(descs) == 1 else []
    warning = corpus.comparability(tuned, what)
    return [*lines, warning] if warning else lines


def _rounded(values: list[float]) -> list[float]:
    m, s = mean_std(values)
    return [round(m, 2), round(s, 2)]


# ---- the demo's Table 1 ----

def table1_summary(demo, tables: list[dict], rows: dict, paper: dict,
                   claims: list[Claim]) -> dict:
    """Several seeds' tables as one: the mean and std of every number, and the verdicts."""
    summary = {"seeds": demo.seeds, "size": demo.size, "world_seed": demo.world_seed,
               "stats": {k: _rounded([t["stats"][k] for t in tables])
                         for k in tables[0]["stats"]}, "rows": []}
    for i, row in enumerate(tables[0]["rows"]):
        summary["rows"].append({**{k: row[k] for k in ("row", "model", "init")}, **{
            k: _rounded([t["rows"][i][k] for t in tables]) for k in DEMO_COLUMNS}})
    summary["verdicts"] = table1_verdicts(tables, paper, claims)
    return summary


def table1_markdown(summary: dict, tables: list[dict], rows: dict, paper: dict,
                    claims: list[Claim]) -> str:
    """The table (mean +- std when several seeds) and each claim's verdict."""
    several = len(tables) > 1

    def cell(v, digits: int = 1) -> str:
        return f"{v[0]:.{digits}f} +- {v[1]:.{digits}f}" if several else f"{v:.{digits}f}"

    s = summary["stats"]
    head = (f"Table 1 analog on the synthetic world ({summary['size']}, world seed "
            f"{summary['world_seed']}, {'seeds ' + str(summary['seeds']) if several else 'seed ' + str(summary['seed'])}); "
            f"chance {tables[0]['chance']}%.")
    facts = [f"Teacher (ResNet-50 analog): {cell(s['teacher_stills'])}% on object stills of unseen "
             f"instances, {cell(s['teacher_frames'])}% on frames of labeled videos."]
    for key, text in (("inflation_source_test", "ResNet-18 analog (inflation source): {}% on "
                       "unseen object stills."), ("scene_net_test", "Scene network (PlaceNet "
                       "analog): {}% on unseen scene stills.")):
        if key in s:
            facts.append(text.format(cell(s[key])))
    for row in rows:
        if f"{row}_agree" in s:
            clip = (f"; with the teacher's clip-level top class (all frames' logits averaged) on "
                    f"{cell(s[f'{row}_agree_clip'])}%, where the teacher's own frames agree with "
                    f"that class on {cell(s[f'{row}_ceiling'])}%, the first number's ceiling"
                    if f"{row}_agree_clip" in s else "")
            facts.append(f"{rows[row][0]} DistInit student: agrees with the teacher's top class on "
                         f"one random frame on {cell(s[f'{row}_agree'])}% of held-out corpus clips"
                         f"{clip} (soft-target loss {cell(s[f'{row}_soft_loss'], 3)}).")
        if f"{row}_corpus_test" in s:
            facts.append(f"{rows[row][0]} supervised pretraining: {cell(s[f'{row}_corpus_test'])}% "
                         f"top-1 on held-out corpus videos.")
    lines = [head, "", *[f"- {f}" for f in facts], "", DEMO_HEADER]
    for r in summary["rows"]:
        lines.append(f"| {r['model']} | {r['init']} | "
                     + " | ".join(cell(r[k]) for k in DEMO_COLUMNS) + f" | {paper[r['row']]} |")
    named = {f"{r['model']}, {r['init']}" + (f", seed {t.get('seed')}" if several else ""):
             r.get("corpus") for t in tables for r in t["rows"]}
    below = corpus_lines(named)
    lines += ["", *below] if below else []
    lines += ["", "Which of the paper's orderings hold here (video top-1 after fine-tuning):"]
    lines += [f"- {v}" for v in table1_verdicts(tables, paper, claims)]
    if not several and "seconds" in summary:
        total = summary.get("wall_s", sum(summary["seconds"].values()))
        side = (f" with {summary['jobs']} one-thread stage processes side by side"
                if summary.get("jobs", 1) > 1 else "")
        lines += ["", f"Wall time {total:.0f} s{side}; each stage: " + ", ".join(
            f"{k} {v:.0f} s" for k, v in summary["seconds"].items())]
    return "\n".join(lines) + "\n"


def table1_verdicts(tables: list[dict], paper: dict, claims: list[Claim]) -> list[str]:
    """One line per claim whose rows ran, judged by `claims.judge`, with the paper's margin."""
    out = []
    for claim in claims:
        margins = []
        for t in tables:
            top1 = {r["row"]: r["top1"] for r in t["rows"]}
            if claim.better in top1 and claim.worse in top1:
                margins.append(top1[claim.better] - top1[claim.worse])
        if margins:
            line = verdict_line(claim, margins)
            out.append(f"{line[:-1]}; paper {paper[claim.better] - paper[claim.worse]:+.1f})")
    return out


# ---- `distinit reproduce` ----

COLUMNS = {"top1": "top-1", "knn20": "kNN-20", "probe": "linear probe", "agree": "agreement",
           "agree_clip": "agreement, clip-level target", "ceiling": "ceiling of agreement",
           "in_mask": "Grad-CAM mass on object, pretrained", "pointing": "Grad-CAM peak on "
           "object, pretrained", "in_mask_ft": "mass, fine-tuned", "pointing_ft": "peak, "
           "fine-tuned"}
ATTRIBUTION = ("in_mask", "pointing", "in_mask_ft", "pointing_ft")


def summarize(name: str, exp, papers: dict[str, float | None], results: dict[str, list[dict]],
              seeds: list[int], seconds: float) -> dict:
    rows = []
    for label, rs in results.items():
        rows.append({"variant": label, "paper": papers.get(label),
                     **{k: mean_std([r.get(k, math.nan) for r in rs])
                        for k in ("top1", "knn20", "probe", *ATTRIBUTION)},
                     "agree": mean_std([r.get("holdout_agree_t0", math.nan) for r in rs]),
                     "agree_clip": mean_std([r.get("holdout_agree_clip_t0", math.nan) for r in rs]),
                     "ceiling": mean_std([r.get("holdout_ceiling_t0", math.nan) for r in rs]),
                     "per_seed_top1": [round(r["top1"], 2) for r in rs],
                     "pretrain_corpus": corpus.describe(
                         {"": corpus.parts(rs[0].get("corpus")).get("pretrain")}),
                     "stages": diagnostics.over_seeds([r.get("stages", []) for r in rs])})
    verdicts = claim_verdicts(exp.claims, rows)
    named = {f"{label}, seed {seed}": r.get("corpus")
             for label, rs in results.items() for seed, r in zip(seeds, rs, strict=False)}
    return {"name": name, "paper": exp.paper, "what": exp.what, "seeds": seeds, "rows": rows,
            "verdicts": verdicts, "corpus": corpus_lines(named, "variants"),
            "seconds": round(seconds, 1)}


def claim_verdicts(claims: list[Claim], rows: list[dict]) -> list[str]:
    """One line per claim whose rows ran, judged by `claims.judge` on the per-seed top-1."""
    out = []
    for claim in claims:
        b, w = _row(rows, claim.better), _row(rows, claim.worse)
        if b is None or w is None:
            continue
        diffs = [x - y for x, y in zip(b["per_seed_top1"], w["per_seed_top1"], strict=True)]
        out.append(verdict_line(claim, diffs))
    return out


def _row(rows: list[dict], label: str) -> dict | None:
    """The row called `label`, else the first whose label starts with it."""
    exact = [r for r in rows if r["variant"] == label]
    return (exact or [r for r in rows if r["variant"].startswith(label)] or [None])[0]


def _cell(v: list[float]) -> str:
    return "" if math.isnan(v[0]) else f"{v[0]:.1f} +- {v[1]:.1f}"


def markdown(table: dict, command: str) -> str:
    nan = [math.nan, math.nan]
    columns = [k for k in COLUMNS if any(not math.isnan(r.get(k, nan)[0]) for r in table["rows"])]
    # Which videos each variant pretrained on (fingerprint, videos (missing)): what it varies.
    pretrained = any(r.get("pretrain_corpus") for r in table["rows"])
    lines = [f"## `{table['name']}`: {table['what']} ({table['paper']})", "", "    " + command, "",
             f"{table['student']} student, the demo's recipe; seeds {table['seeds']}; wall time "
             f"{table['seconds'] / 60:.1f} min on this machine. Video top-1 on split 1 after "
             "fine-tuning; kNN-20 and linear probe on the frozen pretrained features; agreement "
             "with the teacher's top class on one random frame of 256 held-out corpus clips, "
             "with its clip-level top class, and the first's ceiling (how often the one frame's "
             "top class is the clip's). Mean +- std over seeds.",
             *table.get("notes", []),
             "", "| variant | " + " | ".join(COLUMNS[k] for k in columns) + " | paper |"
             + pretrained * " pretraining corpus |",
             "|---|" + "---|" * len(columns) + "---|" + pretrained * "---|"]
    for r in table["rows"]:
        lines.append(f"| {r['variant']} | " + " | ".join(_cell(r[k]) for k in columns)
                     + f" | {r['paper'] if r['paper'] is not None else ''} |"
                     + pretrained * f" {r.get('pretrain_corpus', '')} |")
    lines += ["", *table.get("corpus", [])] if table.get("corpus") else []
    lines += ["", *[f"- {v}" for v in table["verdicts"]]]
    stages = diagnostics.markdown(table["rows"])  # under the table: did each stage learn its task?
    lines += ["", *stages] if stages else []
    return "\n".join(lines) + "\n"


def write_section(doc: Path, name: str, text: str) -> None:
    """Replace (or append) this experiment's section of the Markdown page."""
    head = "# Reproducing the paper's ablations\n\nEach section is written by the command in it.\n"
    body = doc.read_text() if doc.is_file() else head
    marker = f"<!-- reproduce:{name} -->"
    parts = body.split(marker)
    section = f"{marker}\n{text}{marker}"
    body = parts[0] + section + parts[2] if len(parts) == 3 else body.rstrip() + "\n\n" + section
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(body.rstrip() + "\n")
