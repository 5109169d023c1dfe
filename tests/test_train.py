"""Training: checkpoints resume where they stopped, and the loop runs under torchrun."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def _why(stderr: str) -> str:
    """A failed run's stderr for the assertion message: the lines that say why a process
    died (a worker's abort reason comes long before torchrun's summary), then the end."""
    said = [l for l in stderr.splitlines() if any(w in l for w in ("terminate", "what()", "Error", "error"))]
    return "\n".join(said[:20]) + "\n...\n" + stderr[-1500:]


def _run(args, extra_env: dict | None = None, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(extra_env or {}))
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, **kw)


def test_resume_continues_from_checkpoint(tmp_path):
    r = _run([sys.executable, str(HERE / "train_tiny.py"), str(tmp_path), "2"])
    assert r.returncode == 0, r.stderr
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ck["step"] == 2
    first = {k: v.clone() for k, v in ck["model"].items()}
    r = _run([sys.executable, str(HERE / "train_tiny.py"), str(tmp_path), "4"])
    assert r.returncode == 0, r.stderr
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ck["step"] == 4
    assert ck["config"]["levels"][0]["codes"] == 32
    changed = [k for k in first if not torch.equal(first[k], ck["model"][k])]
    assert any(k.startswith("levels.0.encoder") for k in changed)


def test_torchrun_two_processes(tmp_path):
    r = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
              "--master_port=29517", str(HERE / "train_tiny.py"), str(tmp_path), "2"])
    assert r.returncode == 0, _why(r.stderr)
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ck["step"] == 2


def _stage_after_stage_one(tmp_path, settings: str, spoil: str = ""):
    """Train the tiny model 2 steps into ``a``, then 2 more steps into ``b`` started from
    ``a`` with ``TrainSettings(<settings>)``; returns both state dicts. With ``spoil``,
    the floating-point tensors of ``a`` whose names start with it are zeroed first."""
    script = (
        "import sys, torch, torch.nn.functional as F\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from make_tiny import tiny_config\n"
        "from hvqc.train import TrainSettings, train\n"
        "g = torch.Generator().manual_seed(0)\n"
        f"s = TrainSettings(steps=2, reset_every=1, {settings},\n"
        f"                  init={str(tmp_path / 'a' / 'ckpt.pt')!r})\n"
        f"train(tiny_config(), lambda i: torch.rand(2, 3, 32, 32, generator=g), F.mse_loss,\n"
        f"      {str(tmp_path / 'b')!r}, s, progress=False)\n")
    r = _run([sys.executable, str(HERE / "train_tiny.py"), str(tmp_path / "a"), "2"])
    assert r.returncode == 0, r.stderr
    if spoil:
        ck = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)
        for k, v in ck["model"].items():
            if k.startswith(spoil) and v.is_floating_point():
                v.zero_()
        torch.save(ck, tmp_path / "a" / "ckpt.pt")
    r = _run([sys.executable, "-c", script])
    assert r.returncode == 0, r.stderr
    return (torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)["model"],
            torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["model"])


def test_stage_two_keeps_the_frozen_level_fixed(tmp_path):
    """A run started from another run's checkpoint with freeze_levels=1 and a signal
    loss leaves level 0's encoder/decoder/codebook untouched and trains the rest."""
    a, b = _stage_after_stage_one(tmp_path, "signal_weight=1.0, freeze_levels=1")
    for k in a:
        if k.startswith(("levels.0.encoder", "levels.0.decoder", "levels.0.quantizer.codebook")):
            assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["levels.1.encoder.net.0.weight"], b["levels.1.encoder.net.0.weight"])
    assert not torch.equal(a["levels.0.prior.net.0.weight"], b["levels.0.prior.net.0.weight"])


def test_priors_stage_changes_only_the_priors(tmp_path):
    """Stage 3 (priors_only) keeps every encoder, decoder, codebook and quantizer buffer,
    so the codes of the finished model do not move, and trains every prior."""
    a, b = _stage_after_stage_one(tmp_path, "priors_only=True")
    for k in a:
        if ".prior." not in k and not k.endswith("usage"):
            assert torch.equal(a[k], b[k]), k
    levels = {k.split(".")[1] for k in a}
    for lv in levels:
        assert not torch.equal(a[f"levels.{lv}.prior.net.0.weight"], b[f"levels.{lv}.prior.net.0.weight"])


def test_code_priors_stage_trains_the_chosen_priors_on_whole_signals(tmp_path):
    """The code-priors stage encodes every signal once (whole, any size), trains only the
    priors of the levels it is given (here with a new coding phase) and resumes from its
    checkpoint and cached codes without encoding again."""
    import copy
    sys.path.insert(0, str(HERE))
    from make_tiny import tiny_config
    from hvqc.hierarchy import HierarchicalVQVAE
    from hvqc.train import TrainSettings, train_code_priors
    r = _run([sys.executable, str(HERE / "train_tiny.py"), str(tmp_path / "a"), "2"])
    assert r.returncode == 0, r.stderr
    init = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)["model"]
    g = torch.Generator().manual_seed(1)
    xs = [torch.rand(1, 3, h, w, generator=g) for h, w in ((32, 48), (16, 16), (64, 32))]
    config = copy.deepcopy(tiny_config())
    for lv in config.levels[1:]:
        lv.prior_phase = 3
    settings = TrainSettings(steps=2, ckpt_every=1, init=str(tmp_path / "a" / "ckpt.pt"))
    run = tmp_path / "b"
    train_code_priors(config, lambda: iter(xs), run, settings, [1, 2], 2, progress=False)
    ck = torch.load(run / "ckpt.pt", weights_only=True)
    assert ck["step"] == 2 and [lv["prior_phase"] for lv in ck["config"]["levels"]] == [2, 3, 3]
    b = ck["model"]
    for k in init:                      # encoders, codebooks, decoders and level 0's prior stay
        if not k.startswith(("levels.1.prior.", "levels.2.prior.")):
            assert torch.equal(init[k], b[k]), k
    for lv in (1, 2):
        assert not torch.equal(init[f"levels.{lv}.prior.net.0.weight"], b[f"levels.{lv}.prior.net.0.weight"])
    model = HierarchicalVQVAE(config)
    model.load_state_dict(init)
    cache = torch.load(run / "codes.pt", weights_only=True)
    with torch.no_grad():
        for x, item in zip(xs, cache):
            codes = model.encode(x)
            assert torch.equal(item["codes1"], codes[1][0].short()) and "cond2" not in item
            assert torch.equal(item["cond1"], model.predict(2, codes[2])[0].half())

    def no_encoding():
        raise AssertionError("the resumed run encoded the signals again")
    settings.steps = 3
    train_code_priors(config, no_encoding, run, settings, [1, 2], 2, progress=False)
    assert torch.load(run / "ckpt.pt", weights_only=True)["step"] == 3
    with pytest.raises(ValueError, match="needs a finished model"):
        train_code_priors(config, lambda: iter(xs), tmp_path / "c", TrainSettings(steps=1), [1], 2,
                          progress=False)


def test_decoder_stage_changes_only_the_finest_decoder(tmp_path):
    """Stage 4 (decoder_only) trains level 0's decoder and keeps everything a file's
    codes and rates depend on (encoders, codebooks, quantizer buffers, the other
    decoders, the priors) bit for bit."""
    a, b = _stage_after_stage_one(tmp_path, "decoder_only=True")
    for k in a:
        if not k.startswith("levels.0.decoder."):
            assert torch.equal(a[k], b[k]), k
    changed = [k for k in a if k.startswith("levels.0.decoder.") and not torch.equal(a[k], b[k])]
    assert len(changed) == sum(k.startswith("levels.0.decoder.") for k in a)


def test_decode_stage_keeps_the_codes_and_trains_every_prior_and_decoder(tmp_path):
    """Stage 5 (decode_side) trains the priors and every level's decoder on the rate plus
    every cut's distortion, and keeps every encoder, codebook and quantizer buffer bit for
    bit, so a file's codes do not move."""
    a, b = _stage_after_stage_one(tmp_path, "decode_side=True, rate_weight=2.0")
    for k in a:
        if ".encoder." in k or ".quantizer." in k:
            assert torch.equal(a[k], b[k]), k
    for lv in {k.split(".")[1] for k in a}:
        for part in ("prior", "decoder"):
            trained = [k for k in a if k.startswith(f"levels.{lv}.{part}.")]
            assert any(not torch.equal(a[k], b[k]) for k in trained), (lv, part)


def test_decode_stage_refuses_torchrun(tmp_path):
    """The decode stage trains in one process: under torchrun it says so instead of
    training replicas that never average their gradients."""
    script = ("import torch, torch.nn.functional as F, sys\n"
              f"sys.path.insert(0, {str(HERE)!r})\n"
              "from make_tiny import tiny_config\n"
              "from hvqc.train import TrainSettings, train\n"
              "try:\n"
              "    train(tiny_config(), lambda i: torch.rand(2, 3, 32, 32), F.mse_loss,\n"
              f"          {str(tmp_path / 'r')!r}, TrainSettings(steps=1, decode_side=True), progress=False)\n"
              "except ValueError as e:\n"
              "    print('refused:', e)\n")
    r = _run([sys.executable, "-c", script], {"WORLD_SIZE": "2"})
    assert r.returncode == 0, r.stderr
    assert "refused: the decode stage (decode_side) trains in one process" in r.stdout
    assert not (tmp_path / "r" / "ckpt.pt").exists()


def test_decoder_stage_under_torchrun_keeps_replicas_equal(tmp_path):
    """Under torchrun each rank draws its own batches; the decoder stage averages the
    decoder's gradients across ranks, so both replicas end with the same decoder."""
    r = _run([sys.executable, str(HERE / "train_tiny.py"), str(tmp_path / "a"), "2"])
    assert r.returncode == 0, r.stderr
    script = tmp_path / "stage.py"
    script.write_text(
        "import os, sys, torch, torch.nn.functional as F\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from make_tiny import tiny_config\n"
        "import hvqc.train as T\n"
        "made = []\n"
        "class Kept(T.HierarchicalVQVAE):          # keep each rank's model to compare\n"
        "    def __init__(self, *a):\n"
        "        super().__init__(*a)\n"
        "        made.append(self)\n"
        "T.HierarchicalVQVAE = Kept\n"
        "rank = int(os.environ['RANK'])\n"
        "g = torch.Generator().manual_seed(rank)    # each rank its own batches\n"
        f"s = T.TrainSettings(steps=2, decoder_only=True, init={str(tmp_path / 'a' / 'ckpt.pt')!r})\n"
        f"T.train(tiny_config(), lambda i: torch.rand(2, 3, 32, 32, generator=g), F.mse_loss,\n"
        f"        {str(tmp_path / 'b')!r}, s, progress=False)\n"
        f"torch.save(made[0].levels[0].decoder.state_dict(), {str(tmp_path)!r} + f'/rank{{rank}}.pt')\n")
    r = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
              "--master_port=29519", str(script)])
    assert r.returncode == 0, _why(r.stderr)
    a = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)["model"]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        assert not torch.equal(r0[k], a[f"levels.0.decoder.{k}"]), k


def test_priors_learn_the_argmax_codes():
    """The priors' training target is what a file carries: the argmax codes."""
    sys.path.insert(0, str(HERE))
    from make_tiny import tiny_config
    from hvqc.hierarchy import HierarchicalVQVAE
    torch.manual_seed(0)
    m = HierarchicalVQVAE(tiny_config())
    x = torch.rand(2, 3, 32, 32)
    seen = []
    for lv in m.levels:
        lv.prior.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    m(x, tau=1.0)
    for got, want in zip(seen, m.encode(x)):
        assert torch.equal(got, want)


def test_top_stage_keeps_the_bottom_levels_and_starts_the_rest_fresh(tmp_path):
    """``keep_levels`` loads only the bottom levels of ``init``; the levels above start
    from fresh weights and codebooks k-means-initialised on their own encoder outputs."""
    a, b = _stage_after_stage_one(tmp_path, "keep_levels=1, freeze_levels=1, commit_warmup=0.5",
                                  spoil="levels.1.")
    for k in a:
        if k.startswith(("levels.0.encoder", "levels.0.decoder", "levels.0.quantizer.codebook")):
            assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["levels.1.quantizer.codebook"], b["levels.1.quantizer.codebook"])
    assert bool(b["levels.1.quantizer.initialised"])
    # fresh, not continued from the zeroed weights of ``a`` (two steps at lr 2e-4 move
    # a weight by about 4e-4)
    assert b["levels.1.decoder.net.0.weight"].abs().max() > 1e-2


def test_latent_loss_scores_the_batch_mean_as_nothing_learned():
    """A level's latent MSE is normalised by what differs across the batch: predicting the
    batch mean of a target that is 92 % constant scores ~1, not ~0.08 (with which the
    small top levels of mnist and faces collapsed onto their mean)."""
    from hvqc.hierarchy import _spread
    g = torch.Generator().manual_seed(0)
    const = 3 * torch.randn(1, 16, 2, 2, generator=g)
    target = const + 0.9 * torch.randn(64, 16, 2, 2, generator=g)
    mean_pred = target.mean(0, keepdim=True).expand_as(target)
    score = torch.nn.functional.mse_loss(mean_pred, target) / _spread(target)
    assert 0.9 < score < 1.05
    assert target.var(0).mean() / target.var() < 0.1         # the constant part dominates
    one = _spread(target[:1])                                  # a batch of one: the floor
    assert torch.isfinite(one) and one > 0


def test_time_budget_stops_the_run_and_schedules_by_elapsed_time(tmp_path):
    """With ``seconds``, a run stops when its wall-clock budget is spent (``steps`` is only
    a cap), records the seconds in its checkpoint, and its schedules follow the elapsed
    fraction of the budget."""
    sys.path.insert(0, str(HERE))
    from make_tiny import tiny_config
    from hvqc.train import TrainSettings, budget_fraction as _fraction, tau_at, train
    s = TrainSettings(steps=10 ** 6, seconds=2.0, reset_every=1, ckpt_every=10 ** 6)
    g = torch.Generator().manual_seed(0)
    train(tiny_config(), lambda i: torch.rand(2, 3, 32, 32, generator=g), torch.nn.functional.mse_loss,
          tmp_path, s, progress=False)
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert 1 <= ck["step"] < 10 ** 6
    assert 2.0 <= ck["seconds"] < 60
    assert ck["settings"]["seconds"] == 2.0
    s = TrainSettings(steps=1000, seconds=100.0, tau_start=1.0, tau_end=0.01)
    assert _fraction(10, 50.0, s) == 0.5                     # time leads
    assert _fraction(800, 50.0, s) == 0.8                    # the step cap leads
    assert _fraction(10, 500.0, s) == 1.0
    assert abs(tau_at(10, s, _fraction(10, 50.0, s)) - 0.1) < 1e-12
    assert _fraction(250, 1e9, TrainSettings(steps=1000)) == 0.25   # no budget: steps alone


def test_init_from_shipped_safetensors(tmp_path):
    """``init`` also takes a shipped float16 weights file: the run starts from exactly its
    weights (widened), so a published model can be trained further (``photo-tune``)."""
    sys.path.insert(0, str(HERE))
    from make_tiny import tiny_config
    from hvqc.hierarchy import HierarchicalVQVAE
    from hvqc.train import TrainSettings, train
    from hvqc.zoo import from_state, save_weights
    from safetensors.torch import load_file
    torch.manual_seed(1)
    model = HierarchicalVQVAE(tiny_config())
    for lv in model.levels:
        lv.quantizer.initialised.fill_(True)
    save_weights(model, tmp_path / "w.safetensors", "image", half=True)
    want = from_state(tiny_config().to_dict(), load_file(str(tmp_path / "w.safetensors"))).state_dict()
    s = TrainSettings(steps=1, lr=0.0, init=str(tmp_path / "w.safetensors"))
    train(tiny_config(), lambda i: torch.rand(2, 3, 32, 32), torch.nn.functional.mse_loss,
          tmp_path / "run", s, progress=False)
    got = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["model"]
    for k, v in want.items():
        if not k.endswith("usage"):
            assert torch.equal(got[k], v), k
    assert got["levels.0.encoder.net.0.weight"].dtype == torch.float32


def test_time_budget_is_refused_under_torchrun(tmp_path, monkeypatch):
    """Ranks of a distributed run would stop at different steps (and hang in the
    all-reduce), so a time budget is refused there before anything is built."""
    import pytest
    from hvqc.train import TrainSettings, train
    sys.path.insert(0, str(HERE))
    from make_tiny import tiny_config
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="single-process"):
        train(tiny_config(), lambda i: torch.rand(2, 3, 32, 32), torch.nn.functional.mse_loss,
              tmp_path / "run", TrainSettings(steps=2, seconds=1.0), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["photo-decode", "mnist-decode", "faces-decode"])
def test_decode_recipes_pass_the_rate_weight_on(monkeypatch, tmp_path, name):
    """``--rate-weight`` reaches the training settings of every image model's decode stage
    (the data and the loop are stubbed: only the settings are looked at)."""
    import hvqc.recipes as R
    seen = {}
    monkeypatch.setattr(R, "train", lambda config, sample, dist, run, settings, *a: seen.setdefault("s", settings))
    monkeypatch.setattr(R, "require", lambda f: tmp_path)
    monkeypatch.setattr(R, "CropSampler", lambda *a: [])
    monkeypatch.setattr(R, "mnist", lambda split: (torch.zeros(1, 1, 32, 32), None))
    monkeypatch.setattr(R, "celeba", lambda split: torch.zeros(1, 3, 64, 64))
    R.train_recipe(name, tmp_path / "r", 1, rate_weight=3.5)
    assert seen["s"].decode_side and seen["s"].rate_weight == 3.5


def test_code_priors_recipe_trains_levels_2_and_3_on_whole_mirrored_photos(monkeypatch, tmp_path):
    """``photo-code-priors`` hands the loop every training photo whole and mirrored, padded
    to the top stride, the photo config (level 3 in 9 groups) and levels 2-3; it refuses
    the options of other stages (the loop is stubbed)."""
    from PIL import Image
    import hvqc.recipes as R
    import numpy as np
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    seen = {}
    monkeypatch.setattr(R, "require", lambda f: tmp_path)
    monkeypatch.setattr(R, "train_code_priors", lambda config, signals, run, settings, levels, batch, *a:
                        seen.update(config=config, xs=list(signals()), levels=levels, batch=batch))
    R.train_recipe("photo-code-priors", tmp_path / "r", 1, batch=4)
    assert seen["levels"] == [1, 2] and seen["batch"] == 4
    assert [lv.prior_phase for lv in seen["config"].levels] == [2, 2, 3]
    xs = seen["xs"]
    assert len(xs) == 6 and all(x.shape == (1, 3, 64, 64) for x in xs)     # 3 folders x (photo, mirror)
    assert torch.equal(xs[0][0, :, :40, :50], torch.from_numpy(rgb).permute(2, 0, 1) / 255)
    assert torch.equal(xs[1][..., :40, :50], xs[0][..., :40, :50].flip(-1))
    for bad in (dict(freeze=1), dict(rate_weight=1.0), dict(device="cuda")):
        with pytest.raises(ValueError, match="code-priors stage takes no"):
            R.train_recipe("photo-code-priors", tmp_path / "r", 1, **bad)
    R.train_recipe("photo-code-priors", tmp_path / "r", 1, batch=4, levels=[3, 1])
    assert seen["levels"] == [0, 2]                         # 0-based, bottom first
    for bad in ([], [0], [4], [2, 2]):
        with pytest.raises(ValueError, match="--levels must name distinct levels in 1..3"):
            R.train_recipe("photo-code-priors", tmp_path / "r", 1, levels=bad)
    with pytest.raises(ValueError, match="--levels is for the code-priors stage"):
        R.train_recipe("photo-priors", tmp_path / "r", 1, levels=[1])


def test_export_keeps_the_coding_defaults_of_the_model_it_replaces(tmp_path, monkeypatch):
    """``hvqc export`` writes a new entry for the model, but keeps the choices made for
    its files before (``descent``, ``colour_log_slope``, ...), which no run records."""
    import json
    sys.path.insert(0, str(HERE))
    from make_tiny import tiny_config
    from hvqc.publish import publish
    from hvqc.train import TrainSettings, train
    train(tiny_config(), lambda i: torch.rand(2, 3, 32, 32), torch.nn.functional.mse_loss,
          tmp_path / "run", TrainSettings(steps=1, lr=0.0), progress=False)
    weights = tmp_path / "weights"
    weights.mkdir()
    old = {"file": "x.safetensors", "sha256": "0" * 64, "levels": [],
           "descent": "mean", "colour_log_slope": 0.25}
    (weights / "manifest.json").write_text(json.dumps({"models": {"x": old}}))
    monkeypatch.setenv("HVQC_WEIGHTS", str(weights))
    entry = publish(tmp_path / "run", "x", force=True)
    assert (entry["descent"], entry["colour_log_slope"]) == ("mean", 0.25)
    assert json.loads((weights / "manifest.json").read_text())["models"]["x"] == entry
