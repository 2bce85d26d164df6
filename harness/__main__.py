"""``python -m harness``: deploy, check and tear down Euglena stages."""

from harness.cli import main

raise SystemExit(main())
