"""``python -m dagster_wandb_secure.cli``."""

from . import main

raise SystemExit(main())
