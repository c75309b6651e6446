"""``python -m rlad.platform.cli ...`` runs the ``rlad`` command."""
import sys

from rlad.platform.cli.main import main

sys.exit(main())
