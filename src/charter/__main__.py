"""`python -m charter`: the same command line as the `charter` script."""

from charter.cli import main

main()
