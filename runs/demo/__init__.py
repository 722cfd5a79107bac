"""The demo's history and prices."""
