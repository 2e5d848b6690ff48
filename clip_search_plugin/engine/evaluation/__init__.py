"""Evaluation: searches scored against label polygons, and the query path measured on published embeddings."""
