"""Simulation helpers shared by tests and benchmarks: chain generation, scripted peers.

Nothing here is used by the node itself.
"""
