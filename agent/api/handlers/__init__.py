"""Command handlers: validate nothing (the edge did), call a domain function, shape the reply."""
