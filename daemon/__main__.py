"""``python -m daemon`` runs the skystream command line."""

from daemon.app.cli import main

raise SystemExit(main())
