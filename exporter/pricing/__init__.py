"""Pricing: sources that quote a node from memory, and the engine that picks one per node."""
