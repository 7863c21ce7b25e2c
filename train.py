#!/usr/bin/env python
"""Train a MedVAE model: ``python train.py --config configs/NAME.yaml [key=value ...]``.

Several GPUs: ``torchrun --nproc_per_node=K train.py --config ...`` (DistributedDataParallel).
"""

import argparse
import sys

from medvae.cli import train as train_command

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    train_command.add_arguments(parser)
    sys.exit(train_command.run(parser.parse_args()))
