"""``python -m hpcrt ...`` is the ``hpcrt`` command."""

from hpcrt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
