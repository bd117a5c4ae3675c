"""``python -m api.cli``: the ``tradecore`` command from this checkout."""

from api.cli import main

main()
