"""OpenFlow to a bridge: the os-ken codec over one asyncio connection."""
