"""A shard's default limits (no heavy imports: the CLI shows them in --help)."""

MAX_MESSAGE_BYTES = 256 << 20  # both directions; a reply that could pass it is refused up front
MAX_GAMES_PER_CALL = 65536
MAX_GAMES = 1 << 20  # held by one shard
MAX_PLACEMENT_KEY_BYTES = 256  # a trainer's name for its batch, not a payload
WORKERS = 4  # threads stepping pools in parallel

# Requests (wire/admission.py). The widest request a call can make, per game: its id (uint64),
# its moves in the widest form the codec takes (generals-bots [players, 5] as int64, up to the
# engine's MAX_PLAYERS = 8), a seat and a seat token (uint64 each).
REQUEST_BYTES_PER_GAME = 8 + 8 * 5 * 8 + 8 + 8
REQUEST_OVERHEAD_BYTES = 64 << 10  # framing, config, names, placement key, dtype strings
MOVED_KEY_BYTES = 11  # shard to shard: one placement-key hash (a varint) per key handed over
LARGE_CALL_BYTES = 4 << 20  # a 65,536-game step with 2 players (int32 moves) is ~1 MB
LARGE_CALLS = 2  # large calls parsed and served at once (0: no cap)
LARGE_CALL_WAIT_S = 5.0  # the most a large call waits for its turn before RESOURCE_EXHAUSTED


def request_bytes(max_games_per_call: int = MAX_GAMES_PER_CALL, max_games: int = 0) -> int:
    """The largest request a legitimate call can send: `max_games_per_call` games at the widest
    (REQUEST_BYTES_PER_GAME), or a shard's hand-over of `max_games` placement keys."""
    widest = max(max_games_per_call * REQUEST_BYTES_PER_GAME, max_games * MOVED_KEY_BYTES)
    return widest + REQUEST_OVERHEAD_BYTES


# HTTP/2 frames up to 16 MiB (the protocol's maximum; gRPC's default is 16 KiB): a 10 MB
# observation reply then crosses loopback in a few frames instead of ~640.
MAX_FRAME_BYTES = (1 << 24) - 1


def channel_options(
    max_message_bytes: int = MAX_MESSAGE_BYTES, receive_bytes: int | None = None
) -> list[tuple[str, int]]:
    """gRPC message limits and frame size, the same on the server and its clients. A server
    receives requests, smaller than its replies: `receive_bytes` (wire/admission.py), refused
    by the gRPC core before their bytes are buffered."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes if receive_bytes is None else receive_bytes),
        ("grpc.http2.max_frame_size", MAX_FRAME_BYTES),
    ]
