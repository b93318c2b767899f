"""Entry point for ``python -m trellis_backend.server``."""

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
