"""The one path every run takes, gateway and playground alike: start, read, record, finish."""
