"""The HQA digits and faces study: bits, distortion and meaning kept at every level.

    python bench/hqa_study.py --model mnist [--limit N] [-o bench/results]
    python bench/hqa_study.py --model faces [--limit N] [-o bench/results]

For each level L of the model, on the held-out images (MNIST's 10,000 test digits;
the 500 held-out CelebA faces), it reports:

- nominal bits per image: latent positions x log2(codes), summed over the levels a
  level-L file carries (L and every level above it);
- the real coded bits: the payload of the ``.hvqc`` file coded down to level L
  (one joint range-coder stream for all levels, so each file pays the coder's
  final-word flush once, not once per level), and the whole file with its header;
- the prior's ideal ``-log2 p`` of the same codes;
- MSE and PSNR of the 8-bit reconstruction (mnist), PSNR and SSIM (faces);
- mnist only: the accuracy of a digit classifier (trained here on the 60,000
  training digits) on the reconstructions, beside its clean test accuracy.

Samples: an 8x8 grid from the learned priors; for mnist also the classifier's label
distribution over 1,000 samples (entropy of the label histogram, mean confidence)
with the top code drawn from the learned top prior and drawn uniformly (as the HQA
notebook does).

Payloads are measured with one range encoder per cut fed the same integer tables,
which gives exactly the file's payload (checked against ``hvqc.codec.compress_image``
and a decode round trip on the first images, see ``checked_files``).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn
from torchvision.utils import save_image

from hvqc.analysis.metrics import psnr
from hvqc.api import decompress
from hvqc.codec import compress_image
from hvqc.coding import compress_cuts
from hvqc.datasets import celeba, mnist
from hvqc.image import from_tensor, to_channels, to_tensor
from hvqc.publish import record_rates
from hvqc.sample import sample_batches
from hvqc.zoo import load

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- digit classifier
class DigitNet(nn.Module):
    """A small CNN for 32x32 digits (about 99% on MNIST's test set)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 16, 10))

    def forward(self, x):
        return self.net(x)


def train_classifier(path: Path, epochs: int = 3, seed: int = 0) -> DigitNet:
    """Train (or load from ``path``) the study's digit classifier on the 60,000 training digits."""
    net = DigitNet()
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    torch.manual_seed(seed)
    x, y = mnist("train")
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 128):
            b = perm[i:i + 128]
            xb = x[b]
            shift = torch.randint(-2, 3, (2,), generator=gen)          # light augmentation
            xb = torch.roll(xb, (int(shift[0]), int(shift[1])), (2, 3))
            loss = F.cross_entropy(net(xb), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"classifier epoch {ep + 1}/{epochs}: last loss {loss.item():.4f}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net.eval()


@torch.no_grad()
def classify(net: DigitNet, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities ``[N, 10]``."""
    return torch.cat([F.softmax(net(x[i:i + 500]), 1) for i in range(0, len(x), 500)])


# ---------------------------------------------------------------- coding
@torch.no_grad()
def coded_bits(lm, codes: list[torch.Tensor]) -> tuple[list[int], list[float]]:
    """For one image's codes (``[1, *S]`` per level, bottom first): the payload bytes of
    the joint file cut at each level and the ideal bits of each level, both bottom first."""
    cuts, bits = compress_cuts(lm, codes, 0, joint=True)
    return [len(cuts[(l, 0)][0]) for l in range(lm.model.num_levels)], bits[::-1]


def to8(x: torch.Tensor) -> torch.Tensor:
    """What a PNG keeps: round to 8 bits."""
    return (x.clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def evaluate_levels(lm, x: torch.Tensor, check: int = 20) -> tuple[list[dict], dict[int, torch.Tensor], dict]:
    """Per-level rate and reconstructions of ``x`` ``[N, C, H, W]`` in [0, 1]."""
    m = lm.model
    n = m.num_levels
    # One image at a time, through the codec's own input path (8-bit image -> tensor):
    # batched or differently laid-out convolutions may round differently and flip a
    # near-tie between two codes.
    mode = "L" if x.shape[1] == 1 else "RGB"
    cin = m.config.channels
    codes = [torch.cat(c) for c in zip(*[m.encode(to_channels(to_tensor(from_tensor(x[i:i + 1], mode))[0], cin))
                                         for i in range(len(x))])]
    payload = np.zeros((len(x), n))
    ideal = np.zeros((len(x), n))
    t0 = time.time()
    for i in range(len(x)):
        p, b = coded_bits(lm, [c[i:i + 1] for c in codes])
        payload[i], ideal[i] = p, b
        if (i + 1) % 1000 == 0:
            print(f"  coded {i + 1}/{len(x)} ({time.time() - t0:.0f} s)", file=sys.stderr)
    recon = {}
    for l in range(n):
        recon[l] = to8(torch.cat([m.decode(l, codes[l][i:i + 256]) for i in range(0, len(x), 256)]))
    # Check the measurement against the real codec on the first images.
    header_bytes, mismatches, pixel_diff = [], 0, 0
    for i in range(min(check, len(x))):
        img = from_tensor(x[i:i + 1], mode)
        for l in range(n):
            res = compress_image(lm, img, l + 1, joint=True)
            header_bytes.append(len(res.data) - sum(res.payload_bytes))
            back = torch.from_numpy(np.asarray(decompress(res.data), dtype=np.float32) / 255)
            back = back.permute(2, 0, 1)[None] if back.ndim == 3 else back[None, None]
            mine = recon[l][i:i + 1]
            if sum(res.payload_bytes) != payload[i, l] or abs(sum(res.estimated_bits) - ideal[i, l:].sum()) > 1e-6:
                mismatches += 1
            pixel_diff = max(pixel_diff, int(round(float((back - mine).abs().max()) * 255)))
    checks = {"checked_files": min(check, len(x)) * n, "mismatches": mismatches,
              "max_pixel_difference_vs_batched_decode": pixel_diff,
              "header_bytes": sorted(set(header_bytes))}
    cfg = m.config
    rows = []
    for l in range(n):
        positions = [math.prod(s // cfg.stride(k) for s in x.shape[2:]) for k in range(l, n)]
        nominal = sum(p * math.log2(cfg.levels[k].codes) for p, k in zip(positions, range(l, n)))
        level_nominal = positions[0] * math.log2(cfg.levels[l].codes)
        rows.append({
            "level": l + 1,
            "latent": "x".join(str(s // cfg.stride(l)) for s in x.shape[2:]),
            "nominal_bits_level": level_nominal,
            "nominal_bits": nominal,
            "ideal_bits_level": float(ideal[:, l].mean()),
            "ideal_bits": float(ideal[:, l:].sum(1).mean()),
            "payload_bits": float(8 * payload[:, l].mean()),
            "file_bits": float(8 * (payload[:, l].mean() + np.mean(header_bytes))),
            "bpp": float(8 * (payload[:, l].mean() + np.mean(header_bytes))) / math.prod(x.shape[2:]),
            "payload_over_ideal": float(payload[:, l].sum() * 8 / ideal[:, l:].sum()),
        })
    return rows, recon, checks


def mnist_study(args) -> dict:
    lm = load("mnist")
    x, y = mnist("test")
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    x = to8(x)                  # the test digits as 8-bit images, as a user would code them
    clf = train_classifier(args.classifier)
    clean = (classify(clf, x).argmax(1) == y).float().mean().item()
    rows, recon, checks = evaluate_levels(lm, x)
    for r in rows:
        rec = recon[r["level"] - 1]
        mse = F.mse_loss(rec, x, reduction="none").flatten(1).mean(1)
        r["mse"] = float(mse.mean())
        r["psnr"] = psnr(rec, x)
        r["psnr_mean_per_image"] = float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())
        r["accuracy"] = float((classify(clf, rec).argmax(1) == y).float().mean())
    # reconstruction grid: 8 test digits, then each level
    grid = torch.cat([x[:8]] + [recon[l][:8] for l in range(lm.model.num_levels)])
    save_image(grid, args.output / "mnist_levels.png", nrow=8, padding=2, pad_value=1.0)
    samples = {}
    for name, kw in {"learned_top_decode": dict(top="prior", lower="decode"),
                     "learned_all_priors": dict(top="prior", lower="prior"),
                     "uniform_top_decode": dict(top="uniform", lower="decode"),
                     "uniform_top_priors": dict(top="uniform", lower="prior")}.items():
        s = to8(sample_batches(lm.model, 32, 32, args.samples, seed=args.seed, batch=250, **kw))
        p = classify(clf, s)
        hist = torch.bincount(p.argmax(1), minlength=10).float()
        hist /= hist.sum()
        ent = float(-(hist[hist > 0] * hist[hist > 0].log2()).sum())
        samples[name] = {"n": args.samples, "label_histogram": [round(float(h), 4) for h in hist],
                         "label_entropy_bits": ent, "max_entropy_bits": math.log2(10),
                         "mean_confidence": float(p.max(1).values.mean()), **kw}
        if name in ("learned_all_priors", "uniform_top_priors"):
            save_image(s[:64], args.output / f"mnist_samples_{name}.png", nrow=8, padding=2, pad_value=1.0)
    return {"model": "mnist", "sha256": lm.sha256, "test_digits": len(x),
            "classifier": {"test_accuracy_clean": clean, "train": "60,000 MNIST training digits, 3 epochs, "
                           "32x32, +-2 px shifts; bench/hqa_study.py DigitNet"},
            "levels": rows, "checks": checks, "samples": samples}


def faces_study(args) -> dict:
    lm = load("faces")
    x = to8(celeba("test"))
    if args.limit:
        x = x[: args.limit]
    rows, recon, checks = evaluate_levels(lm, x)
    for r in rows:
        rec = recon[r["level"] - 1]
        r["psnr"] = psnr(rec, x)
        r["ssim"] = float(ssim(rec, x, data_range=1.0, size_average=True))
    grid = torch.cat([x[:8]] + [recon[l][:8] for l in range(lm.model.num_levels)])
    save_image(grid, args.output / "faces_levels.png", nrow=8, padding=2, pad_value=1.0)
    s = sample_batches(lm.model, 64, 64, 64, seed=args.seed, batch=64, top="prior", lower="prior")
    save_image(s, args.output / "faces_samples.png", nrow=8, padding=2, pad_value=1.0)
    s = sample_batches(lm.model, 64, 64, 64, seed=args.seed, batch=64, top="prior", lower="decode")
    save_image(s, args.output / "faces_samples_decode.png", nrow=8, padding=2, pad_value=1.0)
    return {"model": "faces", "sha256": lm.sha256, "test_faces": len(x), "levels": rows, "checks": checks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["mnist", "faces"], default="mnist")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N test images")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classifier", type=Path, default=Path("runs/mnist-classifier.pt"))
    ap.add_argument("-o", "--output", type=Path, default=RESULTS)
    ap.add_argument("--update-manifest", action="store_true",
                    help="record each level's mean file bpp as its typical rate in weights/manifest.json")
    args = ap.parse_args()
    if args.update_manifest and args.limit:
        ap.error("--update-manifest needs the whole test set (no --limit)")
    args.output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    t0 = time.time()
    out = mnist_study(args) if args.model == "mnist" else faces_study(args)
    out["seconds"] = round(time.time() - t0, 1)
    out["machine"] = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, " \
                     f"{torch.get_num_threads()} threads"
    path = args.output / f"{args.model}_study.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    if args.update_manifest:
        record_rates(args.model, [r["bpp"] for r in out["levels"]])
    print(markdown(out))
    print(f"wrote {path}")


def markdown(out: dict) -> str:
    """The README's table of the study."""
    mn = out["model"] == "mnist"
    head = ("| level | latent | nominal bits | -log2 p bits | payload bits | file bits | "
            + ("MSE | PSNR dB | classifier accuracy |" if mn else "bpp (file) | PSNR dB | SSIM |"))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in out["levels"]:
        tail = (f"{r['mse']:.4f} | {r['psnr']:.2f} | {100 * r['accuracy']:.2f} %" if mn
                else f"{r['bpp']:.4f} | {r['psnr']:.2f} | {r['ssim']:.4f}")
        lines.append(f"| {r['level']} | {r['latent']} | {r['nominal_bits']:.0f} | {r['ideal_bits']:.1f} | "
                     f"{r['payload_bits']:.1f} | {r['file_bits']:.1f} | {tail} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
