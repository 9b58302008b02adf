"""Price sources, one module each. Cloud SDKs are imported inside a source only when it is configured."""
