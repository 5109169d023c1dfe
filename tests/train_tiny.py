"""Train the tiny test config on random crops for a few steps (used by tests/test_train.py).

    python tests/train_tiny.py RUN_DIR STEPS      (also under torchrun)
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from make_tiny import tiny_config  # noqa: E402

from hvqc.train import TrainSettings, train  # noqa: E402

if __name__ == "__main__":
    run, steps = Path(sys.argv[1]), int(sys.argv[2])
    g = torch.Generator().manual_seed(0)
    sample = lambda step: torch.rand(2, 3, 32, 32, generator=g)  # noqa: E731
    train(tiny_config(), sample, F.mse_loss, run,
          TrainSettings(steps=steps, reset_every=2, ckpt_every=2), {"data": "random"}, progress=False)
