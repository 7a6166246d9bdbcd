"""`python -m nudge_server.drill ...`: the fault drill (see `run.main`)."""

from .run import main

raise SystemExit(main())
