"""Adapters: the outside world behind the ports of connector.ports and connector.services."""
