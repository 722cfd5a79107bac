"""A stand-in for the RunTools API (https://api.runtools.ai/v1) on loopback.

Independent of Django: it runs as its own server, exactly like the real upstream, so rtdash's
tests, demo and benchmarks talk to it over real HTTP. See docs/simulator.md.
"""

from __future__ import annotations
