"""Inventory: Kubernetes Nodes (list+watch, or a nodes file) parsed into immutable `Node` values."""
