"""Real servers for the tests: PostgreSQL, Keycloak, slapd, an SMTP sink."""
