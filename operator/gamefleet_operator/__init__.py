"""GameFleet operator: a GameFleet custom resource becomes a sharded fleet of game servers.

The handlers (handlers.py) are thin: what a fleet should look like is decided by pure
functions (spec.py parses, render.py renders children, autoscale.py sizes and drains,
status.py reports), which is what the unit tests cover without any API server.
"""

GROUP = "gamefleet.dev"
VERSION = "v1"
PLURAL = "gamefleets"
KIND = "GameFleet"
API_VERSION = f"{GROUP}/{VERSION}"
