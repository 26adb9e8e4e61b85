"""Model definitions, weight loading, export and inference backends."""
