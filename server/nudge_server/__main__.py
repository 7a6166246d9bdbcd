"""`python -m nudge_server ...` is the `nudge` command."""

from .cli import main

raise SystemExit(main())
