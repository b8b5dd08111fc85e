"""A network lab: real nodes (run_node.py processes) through an emulated wide-area network.

`python -m sim.lab --help`. Each node binds its own loopback address and advertises
another one owned by a user-space relay (relay.py), which forwards every datagram
with the delay, jitter, loss and partitions of the region model (model.py); a
schedule (schedule.py) kills, restarts and adds nodes. Figures are read from the
nodes themselves (their JSON logs, /health, /chain, /metrics: observe.py, analysis.py).
The pure parts (model, schedule, difficulty, analysis, stats) take time and RNG
as arguments and are tested alone.
"""
