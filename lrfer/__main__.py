"""``python -m lrfer``: the ``lrfer`` command, for environments whose scripts folder is not on PATH."""
from lrfer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
