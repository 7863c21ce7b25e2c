#!/usr/bin/env python
"""Rate–distortion evaluation: ``python evaluate.py --data MANIFEST.csv --split test --codecs ... --out results/``.

The same command as ``medvae evaluate``; see ``python evaluate.py --help`` and docs/evaluation.md.
"""

import sys

from medvae.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
