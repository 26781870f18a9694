"""seller-connector: the seller domain, its use cases, and the adapters behind its ports."""
