"""`python -m simvae_fast ...`: the simvae-fast command line."""
import sys

from simvae_fast.app.cli import main

sys.exit(main())
