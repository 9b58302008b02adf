"""AZURE price and billing sources."""
