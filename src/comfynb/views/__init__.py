"""Layer 5: what a notebook looks at (``wait`` today; the widgets to come)."""
