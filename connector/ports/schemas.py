"""The SCIM schema URNs under which the store keeps a resource's attributes.

The store keeps SCIM attributes the domain does not read (titles, addresses, the
enterprise extension...) in a profile document keyed by these names; the SQL adapter
translates SCIM filters onto them and the protocol layer renders them.
"""

from __future__ import annotations

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SELLER_USER_SCHEMA = "urn:seller-connector:scim:schemas:extension:seller:2.0:User"
SELLER_GROUP_SCHEMA = "urn:seller-connector:scim:schemas:extension:seller:2.0:Group"
