"""Serving: typed requests handled by one Service, for the JSON-lines worker, the command line and the self-test."""
