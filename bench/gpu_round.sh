#!/usr/bin/env bash
# One GPU round: hvqc's photo model and its two factorized CompressAI peers each get the
# same wall-clock seconds, side by side on one card, each starting from its finished CPU
# run. Run from the repository root on the GPU machine:
#
#   bash bench/gpu_round.sh smoke     # 20 s check of imports, data and a few steps of each
#   bash bench/gpu_round.sh run SECS  # the round: SECS seconds of training for every model
#   BATCH=64 bash bench/gpu_round.sh run SECS   # another batch (CROP likewise) for all of them
#
# It reads (ignored, carried beside the checkout):
#   .gpu/whl/*.whl      wheels the machine lacks (compressai, pytorch-msssim, constriction)
#   .gpu/{a,b}/data/    the training photos (bsds500, imagenet_sample, sun_hays80; never
#                       Kodak), re-encoded as WebP quality 80 to travel, split in two parts
#   .gpu/peer-f18.pt, .gpu/peer-f06.pt   the CPU-trained peers' weights (float16)
# and starts hvqc from weights/photo.safetensors. hvqc runs its stages one after another
# inside the budget: photo-tune (every level, 58 %), photo-upper (levels 2-3 through the
# pixels, 20 %), photo-priors (13 %), photo-decode (the priors and every decoder on the
# rate plus every cut's distortion as decoded, 9 %); it is exported as weights/photo.safetensors. Results
# go to $OUT (or ./gpu-out): photo.safetensors, manifest.json, the peers' ckpt.pth.tar
# and the logs.
set -u
mode=${1:-smoke}
secs=${2:-20}
batch=${BATCH:-16}      # every model's batch and crop (the round of 2026-11-26: 16 x 256)
crop=${CROP:-256}
out=${OUT:-gpu-out}
mkdir -p "$out" /root/gpu
stash=/root/gpu
# Keep what arrived (a warm machine keeps /root between calls; the second part may
# arrive without the first).
[ -d .gpu/a ] && cp -r --update=none .gpu/a/data "$stash/" 2>/dev/null
[ -d .gpu/b ] && cp -r --update=none .gpu/b/data "$stash/" 2>/dev/null
for f in .gpu/peer-f18.pt .gpu/peer-f06.pt; do [ -f "$f" ] && cp --update=none "$f" "$stash/"; done
[ -d .gpu/whl ] && mkdir -p "$stash/whl" && cp --update=none .gpu/whl/*.whl "$stash/whl/"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$stash"/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HVQC_DATA=$stash/data PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
echo "images: $(find "$stash/data" -name '*.webp' | wc -l)"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
hvqc() { python3 -c 'import sys; from hvqc.cli import app; sys.argv[0] = "hvqc"; app()' "$@"; }

if [ "$mode" = hyperprior-smoke ] || [ "$mode" = hyperprior ]; then
    # The hyperprior peer had no CPU run: it gets both stages here, from scratch, for both
    # lambdas side by side. Stage 1 is the CPU recipe (6,600 steps of batch 8 x 128 px,
    # lr 2e-4), capped at S1 seconds; stage 2 the GPU round's (batch x crop, lr 1e-4, SECS
    # seconds, capped at the 12,400 steps the factorized peers made in their round).
    runs=/root/gpu/runs
    s1=${S1:-180}
    [ "$mode" = hyperprior-smoke ] && s1=$secs runs=/tmp/hyperprior-smoke
    for l in 0.0018 0.0006; do
        (
            python3 bench/train_peer.py --arch bmshj2018-hyperprior --lmbda $l \
                --run $runs/hyperprior-cpu-l$l --device cuda --seconds "$s1" --steps 6600 \
            && [ "$mode" = hyperprior ] \
            && python3 bench/train_peer.py --arch bmshj2018-hyperprior --lmbda $l \
                --init $runs/hyperprior-cpu-l$l/ckpt.pth.tar --run $runs/peer-bmshj2018-hyperprior-l$l \
                --device cuda --seconds "$secs" --steps 12400 --batch "$batch" --crop "$crop" --lr 1e-4
        ) > /root/gpu/hyperprior-$l.out 2>&1 &
    done
    wait
    for r in $runs/hyperprior-cpu-l* $runs/peer-bmshj2018-hyperprior-l*; do
        [ -f "$r/log.txt" ] && echo "$r: $(tail -1 "$r/log.txt")"
    done
    # Each model comes back as two halves of its float32 state dict (a file may hold 16 MB).
    python3 - "$runs" "$out" <<'PY'
import sys
from pathlib import Path
import torch
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
for ckpt in sorted(runs.glob("peer-bmshj2018-hyperprior-l*/ckpt.pth.tar")):
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = ck["state_dict"]
    half, acc, parts = sum(v.numel() * v.element_size() for v in state.values()) / 2, 0, ({}, {})
    for k, v in state.items():
        parts[acc >= half][k] = v
        acc += v.numel() * v.element_size()
    meta = {k: v for k, v in ck.items() if k not in ("state_dict", "optimizer", "aux_optimizer")}
    for i, part in enumerate(parts):
        torch.save({"meta": meta, "state_dict": part}, out / f"hyperprior-l{ck['lmbda']:g}.{i}.pt")
    print(ckpt, meta)
PY
    tar czf "$out/hyperprior-logs.tar.gz" -C /root/gpu $(cd /root/gpu && ls hyperprior-*.out runs/*/log.txt)
    ls -la "$out"
    exit 0
fi

if [ "$mode" = smoke ]; then
    runs=/tmp/smoke; rm -rf $runs
    hvqc train photo-tune --init weights/photo.safetensors --run $runs/tune --device cuda \
        --seconds "$secs" --steps 100000 --batch "$batch" --crop "$crop" 2>&1 | tail -3 &
    python3 bench/train_peer.py --init "$stash/peer-f18.pt" --run $runs/peer --device cuda \
        --seconds "$secs" --steps 100000 --batch "$batch" --crop "$crop" --lr 1e-4 2>&1 | tail -2 &
    wait
    hvqc train photo-decode --init weights/photo.safetensors --run $runs/decode --device cuda \
        --seconds 10 --steps 100000 --batch "$batch" --crop "$crop" 2>&1 | tail -2
    for f in $runs/tune/log.txt $runs/peer/log.txt $runs/decode/log.txt; do
        echo "$f: $(tail -n 1 "$f")"
    done
    exit 0
fi

runs=/root/gpu/runs
t1=$(python3 -c "print(round($secs * 0.58))")
t2=$(python3 -c "print(round($secs * 0.20))")
t3=$(python3 -c "print(round($secs * 0.13))")
t4=$(python3 -c "print($secs - $t1 - $t2 - $t3)")
(
    hvqc train photo-tune --init weights/photo.safetensors --run $runs/photo-tune --device cuda \
        --seconds "$t1" --steps 1000000 --batch "$batch" --crop "$crop" \
    && hvqc train photo-upper --init $runs/photo-tune --run $runs/photo-upper --device cuda \
        --seconds "$t2" --steps 1000000 --batch "$batch" --crop "$crop" \
    && hvqc train photo-priors --init $runs/photo-upper --run $runs/photo-priors --device cuda \
        --seconds "$t3" --steps 1000000 --batch "$batch" --crop "$crop" \
    && hvqc train photo-decode --init $runs/photo-priors --run $runs/photo-decode --device cuda \
        --seconds "$t4" --steps 1000000 --batch "$batch" --crop "$crop" \
    && hvqc export $runs/photo-decode --name photo --force \
    && cp weights/photo.safetensors weights/manifest.json "$out/"
) > /root/gpu/photo.out 2>&1 &
for l in 0.0018 0.0006; do
    python3 bench/train_peer.py --arch bmshj2018-factorized --lmbda $l \
        --init "$stash/peer-f${l: -2}.pt" --run $runs/peer-bmshj2018-factorized-l$l \
        --device cuda --seconds "$secs" --steps 1000000 --batch "$batch" --crop "$crop" --lr 1e-4 \
        > /root/gpu/peer-$l.out 2>&1 &
done
wait
for l in 0.0018 0.0006; do
    python3 - "$runs/peer-bmshj2018-factorized-l$l/ckpt.pth.tar" "$out/peer-f${l: -2}.pth.tar" <<'EOF'
import sys, torch
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
ck.pop("optimizer"); ck.pop("aux_optimizer")    # the model alone comes back (size limit)
torch.save(ck, sys.argv[2])
EOF
done
tar czf "$out/logs.tar.gz" -C /root/gpu photo.out peer-0.0018.out peer-0.0006.out \
    $(cd /root/gpu && ls runs/*/log.txt)
for r in $runs/*; do echo "$r: $(tail -1 $r/log.txt)"; done
ls -la "$out"
