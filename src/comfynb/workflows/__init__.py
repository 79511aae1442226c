"""Layer 1, pure: workflows as data (checks today; loading and conversion to come)."""
