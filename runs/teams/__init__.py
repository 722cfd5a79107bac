"""Logging in, teams, members, RunTools keys, gateway tokens and the audit log."""
