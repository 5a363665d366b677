"""killswitch: an event-driven risk kill-switch daemon for crypto trading accounts."""

__version__ = "0.1.0"
