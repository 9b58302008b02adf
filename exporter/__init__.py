"""node-cost-exporter: what each Kubernetes node really costs, hour by hour."""

__version__ = "0.1.0"
