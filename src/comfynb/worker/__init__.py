"""Layer 4: the worker, the job functions in a loop across servers."""
