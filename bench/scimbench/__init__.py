"""Helpers of bench/scim_bench.py: servers, seeding, load generation and reporting."""
