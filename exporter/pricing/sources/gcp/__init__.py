"""GCP price and billing sources."""
