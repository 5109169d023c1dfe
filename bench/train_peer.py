"""Train a CompressAI peer on hvqc's photo training data, for a like-for-like benchmark.

    python bench/train_peer.py [--arch bmshj2018-factorized] [--lmbda 0.0018]
                               [--steps 6600] [--run runs/peer-bmshj2018-factorized-q1]
                               [--init STATE] [--device cuda] [--seconds S]

No pretrained CompressAI weights can be downloaded here, so the peers of ``hvqc bench``
are trained by this script on exactly what the ``photo`` model saw: the same folders
(``bsds500``, ``imagenet_sample``, ``sun_hays80``; never Kodak), the same sampler
(random 128 px crops with flips, batch 8), the same learning rate and cosine schedule.
The loss is CompressAI's rate-distortion objective, ``lmbda * 255**2 * MSE + bpp``
(0.0018 is CompressAI's quality 1), with its separate auxiliary optimiser for the
entropy bottleneck's quantiles. Size: CompressAI's quality 1-5 (N=128, M=192).

Resumable: ``ckpt.pth.tar`` in the run folder holds the model, both optimisers and the
step, written every ``--ckpt-every`` steps; rerun the same command to go on. The
checkpoint is a plain ``{"state_dict": ...}`` that ``hvqc bench --peer ARCH=PATH`` reads.
The budget is counted in steps, or with ``--seconds`` in wall-clock time (the schedule
then follows the elapsed fraction): a GPU round gives hvqc and each peer the same seconds
side by side on one card, each from its own finished CPU run (``--init``: a checkpoint
or a bare state dict, read when the run folder has none). ``log.txt`` records the seconds.
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hvqc.data import require
from hvqc.image import CropSampler
from hvqc.recipes import PHOTO_FOLDERS
from hvqc.runtime import tune_allocator
from hvqc.train import TrainSettings, budget_fraction

ARCHS = ("bmshj2018-factorized", "bmshj2018-hyperprior")


def build(arch: str):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        from compressai.models import FactorizedPrior, ScaleHyperprior
    return {"bmshj2018-factorized": FactorizedPrior,
            "bmshj2018-hyperprior": ScaleHyperprior}[arch](128, 192)


def rd_loss(out: dict, x: torch.Tensor, lmbda: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CompressAI's ``RateDistortionLoss`` (MSE): ``lmbda * 255**2 * MSE + bpp``."""
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(torch.log(l).sum() for l in out["likelihoods"].values()) / (-math.log(2) * pixels)
    mse = F.mse_loss(out["x_hat"], x)
    return lmbda * 255 ** 2 * mse + bpp, bpp, mse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="bmshj2018-factorized", choices=ARCHS)
    ap.add_argument("--lmbda", type=float, default=0.0018)
    ap.add_argument("--steps", type=int, default=6600,
                    help="total steps (hvqc photo: 7,000 + 1,800 + 1,200 steps, about 110 minutes)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this checkpoint or state dict when the run has none")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=0.0,
                    help="wall-clock budget (0: none); --steps is then a cap")
    args = ap.parse_args()
    tune_allocator()                                   # as the hvqc command does
    run = args.run or Path("runs") / f"peer-{args.arch}-l{args.lmbda:g}"
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    sampler = CropSampler([require(f) for f in PHOTO_FOLDERS], args.crop, args.seed)
    net = build(args.arch).train()
    ckpt = run / "ckpt.pth.tar"
    ck = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.exists() else None
    if ck is not None:                  # the model loads on the CPU (CompressAI re-creates
        net.load_state_dict(ck["state_dict"])   # its coding-table buffers as it loads)
    elif args.init is not None:
        state = torch.load(args.init, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    net.to(device)                      # before the optimisers load: they follow the parameters
    aux_params = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    main_params = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=args.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    step, seconds = 0, 0.0
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        aux_opt.load_state_dict(ck["aux_optimizer"])
        step, seconds = ck["step"], ck["seconds"]
        sampler.rng.seed(args.seed + step)        # fresh crops after a resume
    log = open(run / "log.txt", "a")
    bar = tqdm(total=args.steps, initial=step, dynamic_ncols=True)
    t0 = time.time() - seconds
    budget = TrainSettings(steps=args.steps, seconds=args.seconds)

    def fraction() -> float:
        return budget_fraction(step, time.time() - t0, budget)

    last = fraction() >= 1.0                           # decided once per step
    while not last:
        lr = args.lr * min(1.0, 0.5 * (1 + math.cos(math.pi * fraction())) + 0.05)
        for g in opt.param_groups:
            g["lr"] = lr
        x = sampler.sample(args.batch).to(device, non_blocking=True)
        loss, bpp, mse = rd_loss(net(x), x, args.lmbda)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux = net.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        step += 1
        bar.update(1)
        last = fraction() >= 1.0
        if step % 50 == 0 or last:                    # .item() waits for a GPU
            psnr = -10 * math.log10(max(mse.item(), 1e-10))
            bar.set_postfix_str(f"loss {loss.item():.3f} bpp {bpp.item():.3f} psnr {psnr:.2f} "
                                f"aux {aux.item():.1f}")
            log.write(f"step {step} loss {loss.item():.4f} bpp {bpp.item():.4f} psnr {psnr:.2f} "
                      f"aux {aux.item():.2f} {time.time() - t0:.0f}s\n")
            log.flush()
        if step % args.ckpt_every == 0 or last:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                        "optimizer": opt.state_dict(), "aux_optimizer": aux_opt.state_dict(),
                        "step": step, "seconds": time.time() - t0, "arch": args.arch,
                        "lmbda": args.lmbda,
                        "data": ", ".join(PHOTO_FOLDERS), "crop": args.crop,
                        "batch": args.batch}, tmp)
            os.replace(tmp, ckpt)
    bar.close()
    print(f"checkpoint: {ckpt}")


if __name__ == "__main__":
    main()
