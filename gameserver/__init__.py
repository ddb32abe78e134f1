"""GameFleet game server: batched generals.io engine, pools, codecs and the gRPC service."""

__version__ = "0.1.0"
