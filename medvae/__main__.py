"""``python -m medvae`` runs the command line."""
import sys

from medvae.cli import main

sys.exit(main())
