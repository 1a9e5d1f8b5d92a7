"""`python -m pipeline.cli …`: the `nst` command for scripts that must not depend on the console script."""

from pipeline.cli.app import main

main()
