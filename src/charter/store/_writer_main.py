"""The ledger writer process's entry point: `python -m charter.store._writer_main`.

Its own module, so that running it does not import `charter.store._process` twice.
Arguments: the database URL, the request and reply pipe descriptors, the batch size.
"""

import sys

from charter.store._process import child_main

if __name__ == "__main__":
    child_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
