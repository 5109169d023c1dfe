"""Pack what a GPU round (bench/gpu_round.sh) needs into the ignored folder ``.gpu/``.

    python bench/gpu_pack.py [--quality 80] [--first-mb 15.9]
    python bench/gpu_pack.py --join FOLDER   # the hyperprior round's files, back from the GPU

A GPU machine gets only the checkout plus 64 MiB of carried files per call, and the
photo training folders (bsds500, imagenet_sample, sun_hays80: 1,080 JPEGs, 102 MB; never
Kodak) do not fit beside the tracked tree. They travel re-encoded as WebP (quality 80:
41 MB) in two parts, ``.gpu/a`` (sent with the first call, with the peers) and ``.gpu/b``
(the second); the round's script merges them. The peers' finished CPU runs travel as
float16 state dicts (``.gpu/peer-f18.pt``, ``.gpu/peer-f06.pt``, 6 MB each). The wheels
the GPU machine lacks go to ``.gpu/whl`` with pip, for its Python (3.12):

    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_34_x86_64 --platform manylinux_2_17_x86_64 \\
        -d .gpu/whl compressai==1.2.8 pytorch-msssim==1.0.0 constriction==0.5.0
"""
from __future__ import annotations

import argparse
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from hvqc.data import data_root
from hvqc.image import IMAGE_SUFFIXES
from hvqc.recipes import PHOTO_FOLDERS

OUT = Path(".gpu")
PEERS = {"peer-f18.pt": "runs/peer-bmshj2018-factorized-l0.0018/ckpt.pth.tar",
         "peer-f06.pt": "runs/peer-bmshj2018-factorized-l0.0006/ckpt.pth.tar"}


def _webp(job: tuple[Path, Path, int]) -> int:
    src, dst, quality = job
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").save(dst, "WEBP", quality=quality, method=4)
    return dst.stat().st_size


def join(folder: Path, runs: Path = Path("runs/gpu")) -> None:
    """Joins the two halves of each state dict ``gpu_round.sh hyperprior`` sent back (a
    returned file may hold 16 MB) into a checkpoint ``hvqc bench --peer`` reads."""
    for first in sorted(folder.glob("*.0.pt")):
        halves = [torch.load(first.with_name(first.name[:-4] + f"{i}.pt"), map_location="cpu",
                             weights_only=True) for i in (0, 1)]
        meta = halves[0]["meta"]
        state = {**halves[0]["state_dict"], **halves[1]["state_dict"]}
        ckpt = runs / f"peer-{meta['arch']}-l{meta['lmbda']:g}" / "ckpt.pth.tar"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": state, **meta}, ckpt)
        print(f"{ckpt}: {len(state)} tensors, step {meta['step']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quality", type=int, default=80)
    ap.add_argument("--first-mb", type=float, default=15.9,
                    help="size of the first part (it travels with the peers)")
    ap.add_argument("--join", type=Path, default=None, metavar="DIR",
                    help="instead: join the halves a hyperprior round sent back (DIR/*.0.pt, "
                         "*.1.pt) into runs/gpu/peer-<arch>-l<lmbda>/ckpt.pth.tar")
    args = ap.parse_args()
    if args.join is not None:
        join(args.join)
        return
    root = data_root()
    files = sorted(p for f in PHOTO_FOLDERS for p in (root / f).rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES)
    shutil.rmtree(OUT / "a", ignore_errors=True)
    shutil.rmtree(OUT / "b", ignore_errors=True)
    staged = OUT / "all"
    jobs = [(p, staged / p.relative_to(root).with_suffix(".webp"), args.quality) for p in files]
    with ProcessPoolExecutor() as ex:
        sizes = list(ex.map(_webp, jobs, chunksize=8))
    budget, used = args.first_mb * 1e6, 0
    for i, ((_, dst, _), size) in enumerate(zip(jobs, sizes)):
        part = "a" if i % 2 == 0 and used + size <= budget else "b"
        used += size if part == "a" else 0
        target = OUT / part / "data" / dst.relative_to(staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(dst, target)
    shutil.rmtree(staged)
    for name, ckpt in PEERS.items():
        if not Path(ckpt).is_file():
            print(f"{ckpt}: none here, {name} left out")
            continue
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, OUT / name)
    print(f"{len(files)} images, {sum(sizes) / 1e6:.1f} MB as WebP q{args.quality}: "
          f"{used / 1e6:.1f} MB in .gpu/a, {(sum(sizes) - used) / 1e6:.1f} MB in .gpu/b")


if __name__ == "__main__":
    main()
