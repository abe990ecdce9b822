"""Upscale every video in a folder (recursively), mirroring it into another folder.

Re-running skips the videos that are already done; a failing file does not stop the others.

    python examples/batch_folder.py INPUT_DIR OUTPUT_DIR [--scale 2]
"""

from __future__ import annotations

import argparse

from semlens import SemanticLensUpscaler


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("input_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--scale", type=int, default=4, choices=[2, 4])
    args = parser.parse_args()

    upscaler = SemanticLensUpscaler.from_pretrained(scale=args.scale)
    results = upscaler.upscale_folder(
        args.input_dir, args.output_dir, skip_existing=True,
        on_result=lambda r: print(f"{r.status:8} {r.input} -> {r.output} {r.error or ''}"),
    )
    failed = [r for r in results if r.status == "failed"]
    print(f"{len(results) - len(failed)} ok, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
