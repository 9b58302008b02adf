"""The settings types of the cloud sources, one module per cloud, each type marked with `@section` and the
config section it is read from ("aws.cur" is YAML `aws: {cur: …}`). They live in the config package so the
loader knows every section without importing the sources, which sit above it."""
