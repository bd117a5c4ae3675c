"""Composition root for users: the FastAPI app and the ``tradecore`` CLI."""
