"""Entry points: the command line. (The HTTP entry point is the scim package.)"""
