"""The daemon's runtime: the event loop owner, signal handling, and talking to systemd."""
