"""Infrastructure: settings, connections, local service scripts, deployment files.

Knows nothing of the trading domain.
"""
