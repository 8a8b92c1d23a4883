"""``python -m appsight`` runs the ``appsight`` command."""

import sys

from .cli import main

sys.exit(main())
