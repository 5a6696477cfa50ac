"""The phone (IVR) channel: truckers bundle by keypad through Asterisk's FastAGI (issue 16).

`keypad` and `dialogue` are pure (digits in, AGI actions out); `agi` speaks the protocol,
`calls` carries out what the dialogue asks of the stores through the same write path as the
API (node.writes, node.api.bundles), and `agi_server` listens on the node.
"""
