"""The OpenFlow layer: liveport's flow model on the wire and one connection per bridge.

- encode: model Flow/Match/actions <-> os-ken OpenFlow 1.3 objects (pure).
- packetin: NXT_PACKET_IN2 messages -> frozen PacketIn values (pure).
- errors: OpenFlowError (the switch refused something), ConnectionLost.
- conn: OpenFlowConnection, asyncio, over a bridge's unix management socket: atomic bundles
  of flow changes, flow dumps, barriers, packet-out, packet-ins.
- light: loads os-ken's codec without the rest of os-ken (daemons only).

Only os-ken's message codec is used (no app manager, no eventlet). Imports only
liveport.model and liveport.runtime. The package itself imports nothing, so that
`light.install()` can run before os-ken is loaded.
"""
