"""The mining engine shared by the node and the external miner: the hash loop, its work units, the line protocol, pool sizing."""
