"""Layer 4: a worker's store served to notebooks (the endpoint and ``RemoteStore``), and ``open``."""
