"""Corporate directory sync: pure planning (``plan``) and its apply step (``apply``).

The LDAP side that reads the directory is ``connector.adapters.ldap``.
"""
