"""The ledger writer process's entry point: `python -m charter.store._writer_main`.

Its own module, so that running it does not import `charter.store._writer_child` twice.
Arguments: the database URL, the request and reply pipe descriptors, the batch size and
the parent's process id.
"""

import sys

from charter.store._writer_child import child_main

if __name__ == "__main__":
    child_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
