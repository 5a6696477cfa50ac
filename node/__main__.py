"""`python -m node ...` is the `rocars` command line."""

from node.cli import main

main()
