"""Training loops: one process (CPU or GPU) or torchrun (DDP, gloo), resumable checkpoints.

One loop serves every modality: it is handed a model config, a batch sampler and a
distortion function for level 0. All levels train together; level ``l > 0`` sees
only detached latents of level ``l - 1`` (HQA's greedy stacking, run concurrently),
and the priors train on detached codes. A second stage (``freeze_levels``,
``signal_weight``, ``init``) can then freeze the bottom level and train the levels
above with a loss on the signal they decode to, and a third (``priors_only``) fits
only the priors to the finished model's codes, with their own loss and gradient clip
(in the joint loss they get a 0.05 weight and share one clip with the autoencoders,
which leaves them under-trained); a fourth (``decoder_only``) trains only level 0's decoder,
on what decoding every level and refinement of a file feeds it (the priors' mean
codewords above level 0, which the joint loss never shows it), so no file's codes or
bytes move; a fifth (``decode_side``) trains everything a decoder runs, the priors and
every level's decoder, on the rate of the codes files carry plus the distortion of every
cut as decoded (the decoder stage's views), with the encoders and codebooks fixed so the
codes still do not move. Checkpoints carry their own config,
optimizer state and step, so running the same command again picks up where it stopped.
A run is budgeted in steps or, with ``seconds``, in wall-clock time: the learning-rate
and temperature schedules then follow the elapsed fraction of the budget, which is how
hvqc and its CompressAI peers get the same time on one GPU.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from tqdm import tqdm

from .hierarchy import HierarchicalVQVAE, HierarchyConfig

__all__ = ["TrainSettings", "train", "train_code_priors", "tau_at", "budget_fraction"]


@dataclass
class TrainSettings:
    steps: int = 10000
    lr: float = 2e-4
    tau_start: float = 1.0
    tau_end: float = 0.1
    reset_every: int = 50
    reset_until: float = 0.8      # fraction of steps after which dead codes are left alone
    prior_weight: float = 0.05    # scale of the priors' bits in the summed loss (disjoint params)
    ckpt_every: int = 250
    seed: int = 0
    signal_weight: float = 0.0    # weight of the signal-space loss of each level above 0
    freeze_levels: int = 0        # bottom levels whose encoder, quantizer and decoder stay fixed
    init: str = ""                # checkpoint to start from when the run has none
    priors_only: bool = False     # train only the priors (on the codes of a finished model)
    decoder_only: bool = False    # train only level 0's decoder, on what each cut feeds it
    decode_side: bool = False     # train the priors and every decoder: rate + each cut's distortion
    rate_weight: float = 0.0      # decode_side: distortion units per bit per signal sample (bpp)
    commit_warmup: float = 0.0    # fraction of steps trained without the commitment term
    keep_levels: int = -1         # with ``init``: load only the bottom levels (-1: all); the
                                  # rest start fresh (HQA's greedy training of upper levels)
    seconds: float = 0.0          # wall-clock budget (0: none); ``steps`` is then a cap
    device: str = "cpu"


def tau_at(step: int, s: TrainSettings, frac: float | None = None) -> float:
    """Exponential Gumbel temperature annealing from ``tau_start`` to ``tau_end`` over the
    run (``frac``: the elapsed fraction, when the budget is time rather than steps)."""
    f = min(step / max(s.steps, 1) if frac is None else frac, 1.0)
    return s.tau_start * (s.tau_end / s.tau_start) ** f


def lr_at(frac: float, s: TrainSettings) -> float:
    """The learning rate a fraction ``frac`` through the budget: cosine from ``s.lr``,
    floored at 5 % of it."""
    return s.lr * min(1.0, 0.5 * (1 + math.cos(math.pi * frac)) + 0.05)


def budget_fraction(step: int, elapsed: float, s: TrainSettings) -> float:
    """How far through its budget (``s.steps``, and ``s.seconds`` if set) a run is that has
    made ``step`` steps in ``elapsed`` seconds, in [0, 1]."""
    if s.seconds > 0:
        return min(max(elapsed / s.seconds, step / max(s.steps, 1)), 1.0)
    return min(step / max(s.steps, 1), 1.0)


def _load_init(path: str) -> dict[str, torch.Tensor]:
    """A model state from a run's ``ckpt.pt`` or a shipped ``.safetensors`` file."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)              # float16: loading into the model widens it exactly
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _save(path: Path, model: HierarchicalVQVAE, opt, step: int, seconds: float,
          config: HierarchyConfig, settings: TrainSettings, meta: dict | None) -> None:
    """Write a run's checkpoint atomically (what a resumed run and ``hvqc export`` read)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()},
                "optim": opt.state_dict(), "step": step, "seconds": seconds,
                "config": config.to_dict(), "settings": vars(settings), "meta": meta or {}}, tmp)
    os.replace(tmp, path)


def _decoder_views(model: HierarchicalVQVAE, decoder: torch.nn.Module, x: torch.Tensor,
                   distortion, step: int, seed: int,
                   codes: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Distortion of every cut of ``x`` a file can carry, decoded by level 0's decoder:
    each whole level, and a refinement of each level to a random number of its coding
    groups (seeded by ``step``, so a resumed run draws the same)."""
    rng = random.Random(seed * 1_000_003 + step)
    groups = [rng.randrange(1, len(lv.prior.offsets())) if len(lv.prior.offsets()) > 1 else 0
              for lv in model.levels]
    inputs = model.decoder_inputs(x, groups, codes)
    x_hat = decoder(torch.cat(inputs))
    return [distortion(v, x) for v in x_hat.chunk(len(inputs))]


def _is_dist() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def train(config: HierarchyConfig, sample: Callable[[int], torch.Tensor],
          distortion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
          run_dir: Path, settings: TrainSettings, meta: dict | None = None,
          progress: bool = True) -> Path:
    """Train (or resume) a hierarchy; returns the checkpoint path.

    Args:
        config: the model to build.
        sample: ``step -> batch`` of signals ``[B, C, *S]``.
        distortion: ``(x_hat, x) -> scalar`` loss of the level-0 reconstruction.
        run_dir: where ``ckpt.pt`` and ``log.txt`` go.
        settings: optimisation settings.
        meta: extra JSON-able facts stored in the checkpoint (data, command).
    """
    rank = 0
    if settings.decode_side and _is_dist():
        raise ValueError("the decode stage (decode_side) trains in one process")
    if settings.seconds > 0 and _is_dist():
        raise ValueError("a time budget (seconds) is for single-process training: the ranks "
                         "of a distributed run would stop at different steps")
    if _is_dist() and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_initialized():
        rank = dist.get_rank()
    torch.manual_seed(settings.seed + rank)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "ckpt.pt"
    model = HierarchicalVQVAE(config)
    if settings.init and not ckpt_path.exists():
        state = _load_init(settings.init)
        if settings.keep_levels >= 0:
            state = {k: v for k, v in state.items()
                     if not k.startswith("levels.") or int(k.split(".")[1]) < settings.keep_levels}
        model.load_state_dict(state, strict=settings.keep_levels < 0)
    frozen = {id(p) for lv in model.levels[: settings.freeze_levels]
              for part in (lv.encoder, lv.quantizer, lv.decoder) for p in part.parameters()}
    if settings.priors_only:
        frozen = {id(p) for lv in model.levels
                  for part in (lv.encoder, lv.quantizer, lv.decoder) for p in part.parameters()}
    if settings.decode_side:       # the codes a file carries stay as they are
        frozen = {id(p) for lv in model.levels
                  for part in (lv.encoder, lv.quantizer) for p in part.parameters()}
    if settings.decoder_only:
        keep = {id(p) for p in model.levels[0].decoder.parameters()}
        frozen = {id(p) for p in model.parameters() if id(p) not in keep}
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    step, spent, ck = 0, 0.0, None
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        step, spent = ck["step"], ck.get("seconds", 0.0)
    device = torch.device(settings.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")     # TF32 matrix products
    model.to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if id(p) not in frozen], lr=settings.lr)
    if ck is not None:
        opt.load_state_dict(ck["optim"])               # moves the moments to the parameters' device
    data = sample
    sample = lambda i: data(i).to(device, non_blocking=True)   # noqa: E731
    net, decoder = model, model.levels[0].decoder
    if dist.is_initialized():      # replicas average the gradients of what they train
        if settings.decoder_only:
            decoder = torch.nn.parallel.DistributedDataParallel(decoder)
        else:
            net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    if not all(bool(lv.quantizer.initialised) for lv in model.levels):
        def gather(z: torch.Tensor) -> torch.Tensor:       # every replica, one codebook
            parts = [torch.zeros_like(z) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, z)
            return torch.cat(parts)
        model.init_codebooks(torch.cat([sample(i) for i in range(4)]),
                             gather if dist.is_initialized() else None)
    log = open(run_dir / "log.txt", "a") if rank == 0 else None
    bar = tqdm(total=settings.steps, initial=step, disable=not progress or rank != 0,
               dynamic_ncols=True)
    t0 = time.time() - spent

    # decided once per step, so the last step always writes its checkpoint
    last = budget_fraction(step, time.time() - t0, settings) >= 1.0
    while not last:
        frac = budget_fraction(step, time.time() - t0, settings)
        tau = tau_at(step, settings, frac)
        lr = lr_at(frac, settings)
        for g in opt.param_groups:
            g["lr"] = lr
        warm = frac < settings.commit_warmup
        for lv, spec in zip(model.levels, config.levels):
            lv.quantizer.commit_weight = 0.0 if warm else spec.commit_weight
        x = sample(step)
        if settings.decoder_only:        # every cut's input to level 0's decoder, weighed alike
            views = _decoder_views(model, decoder, x, distortion, step, settings.seed)
            loss = dist_loss = torch.stack(views).mean()
            out = None
        elif settings.decode_side:       # rate of the fixed codes + every cut's distortion
            with torch.no_grad():
                codes = model.encode(x)
            views = _decoder_views(model, decoder, x, distortion, step, settings.seed, codes)
            level_bits = model.bits(codes)
            rate = sum(b / config.stride(i) ** config.dims for i, b in enumerate(level_bits))
            dist_loss = torch.stack(views).mean()
            loss = dist_loss + settings.rate_weight * rate
            out = None
        else:
            out = net(x, tau, settings.signal_weight > 0)
            dist_loss = distortion(out.x_hat, x)
            if settings.priors_only:     # the codes stay fixed: only the priors' bits count
                loss = sum(s.bits for s in out.levels)
            else:
                loss = dist_loss
                for x_l in out.x_hat_levels:
                    loss = loss + settings.signal_weight * distortion(x_l, x)
                for i, s in enumerate(out.levels):
                    loss = loss + (s.recon if i else 0) + s.quant + settings.prior_weight * s.bits
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        step += 1
        last = budget_fraction(step, time.time() - t0, settings) >= 1.0
        if (step % settings.reset_every == 0 and frac < settings.reset_until
                and not (settings.priors_only or settings.decoder_only or settings.decode_side)):
            for lv, z in list(zip(model.levels, out.latents))[settings.freeze_levels:]:
                lv.quantizer.reset_dead(z)
                lv.quantizer.calibrate(z, momentum=0.8)
                if dist.is_initialized():   # keep replicas identical
                    dist.broadcast(lv.quantizer.codebook.data, 0)
                    dist.broadcast(lv.quantizer.usage, 0)
                    dist.broadcast(lv.quantizer.sharpness, 0)
        if rank == 0:
            bar.update(1)
            if step % 50 == 0 or (progress and step % 10 == 0) or last:   # .item() syncs a GPU
                if out is None:
                    parts = "views " + " ".join(f"{v.item():.4f}" for v in views)
                    if settings.decode_side:
                        parts += " bits " + " ".join(f"{b.item():.3f}" for b in level_bits)
                else:
                    parts = " ".join(f"L{i}[r {s.recon.item():.3f} b {s.bits.item():.2f} "
                                     f"p {s.perplexity.item():.0f}]" for i, s in enumerate(out.levels))
                msg = (f"step {step} loss {loss.item():.4f} d {dist_loss.item():.4f} {parts}"
                       f" tau {tau:.3f} {time.time() - t0:.0f}s")
                bar.set_postfix_str(msg.split(" ", 2)[2][:90])
                if step % 50 == 0 or last:
                    log.write(msg + "\n")
                    log.flush()
            if step % settings.ckpt_every == 0 or last:
                _save(ckpt_path, model, opt, step, time.time() - t0, config, settings, meta)
    bar.close()
    if dist.is_initialized():
        dist.barrier()
    return ckpt_path


def _code_cache(model: HierarchicalVQVAE, signals: Callable[[], Iterable[torch.Tensor]],
                levels: list[int]) -> list[dict]:
    """Per signal, the codes (int16) of ``levels`` and, for each level under the top, the
    prediction (float16) from the level above that conditions its prior."""
    items = []
    with torch.no_grad():
        for x in signals():
            codes = model.encode(x)
            item = {}
            for l in levels:
                item[f"codes{l}"] = codes[l][0].short()
                if l + 1 < model.num_levels:
                    item[f"cond{l}"] = model.predict(l + 1, codes[l + 1])[0].half()
            items.append(item)
    return items


def train_code_priors(config: HierarchyConfig, signals: Callable[[], Iterable[torch.Tensor]],
                      run_dir: Path, settings: TrainSettings, levels: list[int], batch: int,
                      meta: dict | None = None, progress: bool = True) -> Path:
    """Train the priors of ``levels`` (0-based) on the codes of whole signals; returns the
    checkpoint path (resumable, as :func:`train`'s).

    A crop of a signal shows a prior the edges of the crop: on the small grids of the upper
    levels (8x8 for a 256-pixel crop at stride 32) most positions are near one, and the
    conditioning is the upper decoder's view of the crop rather than of the signal. Here
    every training signal (``signals()``, each ``[1, C, *S]`` padded to the top stride) is
    encoded once by the model of ``settings.init``, and the priors learn the codes of whole
    signals, conditioned as the coder conditions them: exactly what files carry. Nothing
    but those priors moves, so codes and decoders stay as they are; ``config`` may give the
    levels a new coding phase (a prior's weights do not depend on it). The loss is the rate
    in bits per signal sample of a batch of ``batch`` signals.
    """
    if not settings.init:
        raise ValueError("training priors on codes needs a finished model (init)")
    if _is_dist():
        raise ValueError("training priors on codes runs in one process")
    torch.manual_seed(settings.seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, cache_path = run_dir / "ckpt.pt", run_dir / "codes.pt"
    model = HierarchicalVQVAE(config)
    model.load_state_dict(_load_init(settings.init))
    step, spent, ck = 0, 0.0, None
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        step, spent = ck["step"], ck.get("seconds", 0.0)
    if cache_path.exists():
        items = torch.load(cache_path, weights_only=True)
    else:                 # the codes do not depend on the priors: the init's or a checkpoint's
        items = _code_cache(model, signals, levels)
        torch.save(items, cache_path)
    if len(items) < batch:
        raise ValueError(f"{len(items)} signals for batches of {batch}")
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for l in levels for p in model.levels[l].prior.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=settings.lr)
    if ck is not None:
        opt.load_state_dict(ck["optim"])
    log = open(run_dir / "log.txt", "a")
    bar = tqdm(total=settings.steps, initial=step, disable=not progress, dynamic_ncols=True)
    t0 = time.time() - spent
    last = budget_fraction(step, time.time() - t0, settings) >= 1.0
    while not last:
        frac = budget_fraction(step, time.time() - t0, settings)
        for g in opt.param_groups:
            g["lr"] = lr_at(frac, settings)
        rng = random.Random(settings.seed * 1_000_003 + step)     # a resumed run draws the same
        bits, samples = [0.0] * len(levels), 0
        for item in rng.sample(items, batch):
            for j, l in enumerate(levels):
                codes, cond = item[f"codes{l}"].long()[None], item.get(f"cond{l}")
                prior = model.levels[l].prior
                bits[j] = bits[j] + prior(codes, None if cond is None else cond[None].float()) * codes.numel()
            samples += item[f"codes{levels[0]}"].numel() * config.stride(levels[0]) ** config.dims
        loss = sum(bits) / samples
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        last = budget_fraction(step, time.time() - t0, settings) >= 1.0
        bar.update(1)
        if step % 50 == 0 or last:
            msg = (f"step {step} loss {loss.item():.5f} bits/sample " + " ".join(
                f"L{l + 1} {b.item() / samples:.5f}" for l, b in zip(levels, bits)) + f" {time.time() - t0:.0f}s")
            bar.set_postfix_str(msg.split(" ", 2)[2][:90])
            log.write(msg + "\n")
            log.flush()
        if step % settings.ckpt_every == 0 or last:
            _save(ckpt_path, model, opt, step, time.time() - t0, config, settings, meta)
    bar.close()
    return ckpt_path
