"""What every feature shares: access, crypto, audit, limits, upstream, validation, SSE, SQL."""
