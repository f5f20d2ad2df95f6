"""``python -m daemon`` runs the skystream command line."""

from daemon.cli import main

raise SystemExit(main())
