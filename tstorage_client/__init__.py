"""TStorage Python client: drop-in compatible with the vendor reference client, faster."""

__version__ = "0.1.0"
