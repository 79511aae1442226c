"""The store on one DuckDB file."""
