"""The drop-in RunTools API under /v1/."""
