"""Print the Markdown table of a results JSON written by bench/eval_levels.py.

    python bench/report.py bench/results/photo_kodak.json
"""
import json
import sys


def main(path: str) -> None:
    r = json.load(open(path))
    print(f"Model `{r['model']}` (weights {r['weights_sha256'][:8]}), {r['images']} ({r['count']} images), "
          f"{r['machine']}:\n")
    print("| level | bpp (whole file) | PSNR dB | MS-SSIM | encode s | decode s | payload / -log2 p |")
    print("|---|---|---|---|---|---|---|")
    for m in r["levels"]:
        print(f"| {m['level']} | {m['bpp']:.4f} | {m['psnr']:.2f} | {m['ms_ssim']:.4f} | "
              f"{m['encode_s']:.2f} | {m['decode_s']:.2f} | {1 + m['payload_over_estimate']:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1])
