"""vm-agent: the root agent for one Docker VM."""

__version__ = "0.1.0"
