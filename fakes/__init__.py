"""Wire-level fakes of the APIs the exporter talks to (Kubernetes, AWS Price List/EC2/Athena, GCP Cloud
Billing Catalog/BigQuery, Azure Retail Prices/Cost Management): local HTTP servers that speak each API's
real protocol, reached through the SDKs' endpoint overrides. Shared by tests/ and bench/; not shipped."""
