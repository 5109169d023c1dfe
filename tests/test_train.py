"""Training: checkpoints resume where they stopped, and the loop runs under torchrun."""
import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent


def _run(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
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
    assert r.returncode == 0, r.stderr[-2000:]
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ck["step"] == 2
