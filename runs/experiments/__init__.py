"""Experiments: replay a recorded thread, runs or a prompt set against other agents or configs."""
