"""``python -m fl_core.cli``: the same as the ``bulwark`` command."""

from . import main

main()
