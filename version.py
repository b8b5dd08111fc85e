"""pow-node's version: the one place it is defined (`run_node.py --version`, `/health` `node.version`,
`run_node.py status`, and pyproject.toml, which reads it from here)."""

__version__ = "0.17.0"
