"""`python -m gameserver.cli ...` runs the `gamefleet` command."""

import sys

from .main import main

sys.exit(main())
