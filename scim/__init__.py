"""The SCIM 2.0 protocol layer: Flask endpoints over scim2-server, SQL storage, filters, auth, errors."""
