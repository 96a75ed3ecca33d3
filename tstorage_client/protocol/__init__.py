"""The sans-I/O core of the TStorage connector protocol: no sockets, no asyncio.

``wire`` holds the constants and fixed structs; ``client`` encodes requests and parses
responses incrementally; ``server`` parses requests incrementally and encodes responses.
Channels (and the server) only move bytes in and out of these objects.
"""
