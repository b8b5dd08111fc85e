"""What the actors of one node share at run time: config access, the registry, the metrics."""
