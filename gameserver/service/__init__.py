"""gRPC servicers: the shard (BatchGameService over GamePools) and the router."""
