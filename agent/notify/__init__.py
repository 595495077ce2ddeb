"""Alert events (emitted by jobs and the watchdog) and, later, their delivery."""
