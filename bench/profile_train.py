"""Where a training step of the photo model spends its time, part by part.

    python bench/profile_train.py [--device cuda] [--batch 16] [--crop 256] [--steps 20]

Times one step of ``photo-tune`` (random crops stand in for photos: the cost does not
depend on the pixels) split into the hierarchy's forward pass, the distortion, the
backward pass and the optimiser, then the forward pass again split by module (each
level's encoder, quantizer, decoder and prior), with the device synchronised around each
part. Prints a table and writes JSON with ``-o``.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from hvqc.hierarchy import HierarchicalVQVAE
from hvqc.image import photo_config
from hvqc.losses import msssim_mse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    if args.crop < 97:
        ap.error(f"--crop must be at least 97 px (MS-SSIM's four downsamplings), got {args.crop}")
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.set_float32_matmul_precision("high")
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = HierarchicalVQVAE(photo_config()).to(dev).train()
    x = torch.rand(args.batch, 3, args.crop, args.crop, device=dev)
    model.init_codebooks(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    phases = defaultdict(list)

    def step(timed: bool) -> None:
        marks = [("start", time.perf_counter())]

        def mark(name):
            if timed:
                sync()
                marks.append((name, time.perf_counter()))
        out = model(x, 0.1, False)
        mark("forward")
        loss = msssim_mse(out.x_hat, x)
        for i, s in enumerate(out.levels):
            loss = loss + (s.recon if i else 0) + s.quant + 0.05 * s.bits
        mark("distortion")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        mark("backward")
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        mark("optimiser")
        if timed:
            for (_, a), (name, b) in zip(marks, marks[1:]):
                phases[name].append(b - a)

    for _ in range(3):
        step(False)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(False)
    sync()
    whole = (time.perf_counter() - t0) / args.steps
    for _ in range(args.steps):
        step(True)
    parts = defaultdict(list)          # forward pass by module
    hooks = []
    for i, lv in enumerate(model.levels):
        for name in ("encoder", "quantizer", "decoder", "prior"):
            mod = getattr(lv, name)
            key = f"L{i + 1} {name}"

            def pre(m, a, key=key):
                sync()
                m._t0 = time.perf_counter()

            def post(m, a, o, key=key):
                sync()
                parts[key].append(time.perf_counter() - m._t0)
            hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    with torch.no_grad():
        for _ in range(args.steps):
            model(x, 0.1, False)
    for hk in hooks:
        hk.remove()
    med = lambda v: sorted(v)[len(v) // 2]   # noqa: E731
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "batch": args.batch, "crop": args.crop, "step_s": whole,
              "phases_s": {k: med(v) for k, v in phases.items()},
              "forward_by_module_s": {k: sum(v) / args.steps for k, v in parts.items()}}
    print(f"{result['device']}: batch {args.batch} x {args.crop} px: {whole * 1e3:.1f} ms a step "
          f"({args.batch / whole:.0f} crops/s)")
    for k, v in result["phases_s"].items():
        print(f"  {k:<12} {v * 1e3:8.1f} ms")
    print("  forward, by module (no-grad):")
    for k, v in sorted(result["forward_by_module_s"].items(), key=lambda kv: -kv[1]):
        print(f"    {k:<14} {v * 1e3:8.1f} ms")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
