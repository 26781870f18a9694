"""The LDAP / Active Directory side of the directory sync: configuration and reader."""

from connector.adapters.ldap.config import DirectoryConfig, load_directory_config
from connector.adapters.ldap.reader import DirectoryReader, Marker

__all__ = ["DirectoryConfig", "DirectoryReader", "Marker", "load_directory_config"]
