"""``python -m trellis_backend`` runs the command line (see `trellis_backend.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
