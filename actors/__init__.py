"""The node's actors (Pykka): NetworkIO, GossipManager, ChainKeeper, ConsensusRunner, MinerActor."""
