"""Layer 0, pure: the data the store hands out, the job statuses and their rules, JSON."""
