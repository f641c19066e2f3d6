"""Benchmarks behind ``sslboost bench ...``: measured figures, no assertions."""
