"""The use cases: what a SCIM client, the command line or a directory sync asks of the domain."""
