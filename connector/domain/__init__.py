"""The seller domain: accounts, their primary and secondary users, permission sets. No I/O here."""
