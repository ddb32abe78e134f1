"""A shard's default limits (no heavy imports: the CLI shows them in --help)."""

MAX_MESSAGE_BYTES = 256 << 20  # both directions; a reply that could pass it is refused up front
MAX_GAMES_PER_CALL = 65536
MAX_GAMES = 1 << 20  # held by one shard
MAX_PLACEMENT_KEY_BYTES = 256  # a trainer's name for its batch, not a payload
WORKERS = 4  # threads stepping pools in parallel


# HTTP/2 frames up to 16 MiB (the protocol's maximum; gRPC's default is 16 KiB): a 10 MB
# observation reply then crosses loopback in a few frames instead of ~640.
MAX_FRAME_BYTES = (1 << 24) - 1


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """gRPC message limits and frame size, the same on the server and its clients."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.http2.max_frame_size", MAX_FRAME_BYTES),
    ]
