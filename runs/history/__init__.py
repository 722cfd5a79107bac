"""Run history and threads: lists, details, exports."""
