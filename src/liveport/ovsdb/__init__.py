"""OVSDB: servers (ovsdb-server processes) and clients (liveport's own protocol layer on
python-ovs's JSON-RPC transport, behind one owner thread).

Clients hand out immutable Snapshots and change events, run typed transactions that raise on
failure, and wait on database state with a timeout instead of sleeping.
"""
