"""Pure values and decisions: names, addresses, packets, feature bits, binding decisions, flows.

Nothing in this package performs I/O or imports a layer above it; every function is
deterministic given its arguments (time is passed in through a Clock).
"""
