"""``python -m resty.bench ...``: the same as ``resty bench ...``."""
import sys

from . import main

if __name__ == "__main__":   # importing this module (the import tests do) must not start a bench
    sys.exit(main())
