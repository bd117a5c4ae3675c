"""Event bus, relay, matching service and stream drivers (composition root)."""
