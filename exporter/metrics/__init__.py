"""Metrics: pre-rendered node lines (store), the exporter's own metrics (collector), and exposition."""
