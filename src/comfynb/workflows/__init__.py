"""Layer 1, pure: workflows as data: checks, loading (any format), UI -> API conversion and
``Workflow`` (see docs/workflows.md)."""
