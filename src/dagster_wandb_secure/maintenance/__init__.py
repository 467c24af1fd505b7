"""Maintenance operations over a whole store: audit, adopt, resign and the HTML report."""
