"""`python -m deploy ...` is the `rocars` command line."""

from deploy.cli import main

main()
