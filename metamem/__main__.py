"""``python -m metamem`` runs the CLI (also what ``torchrun -m metamem train ...`` runs)."""

import sys

from metamem.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
