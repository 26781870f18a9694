"""Every port of the connector, and the data classes the ports exchange.

The use cases (``connector.services``) reach the outside world only through these;
the adapters (``connector.adapters``) implement them; the composition root
(``connector.bootstrap``) plugs one into the other.

- :mod:`.store`: the unit of work, its repositories, audit events, outbox entries, tokens;
- :mod:`.outbox`: the outbox as a work queue (claims, states, topics);
- :mod:`.identity`: the identity provider, its console changes and reconcile;
- :mod:`.directory`: what a directory reader yields and the link table;
- :mod:`.mail`: the connector's own emails.
"""
