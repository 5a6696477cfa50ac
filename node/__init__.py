"""rocars node: the aiohttp service, its domain rules, storage and command line."""
