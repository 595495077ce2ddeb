"""Benchmarks of vm-agent against a minimal aiohttp server (``make bench``)."""
