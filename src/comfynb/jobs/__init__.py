"""Layer 3: the job functions a notebook cell calls, and the worker calls in a loop."""
