"""The door: TLS, mutual TLS and the fleet's bearer token on real servers on 127.0.0.1 (a shard, a
router over it, the replay service, shard-to-shard moves over a real redis-server), with
certificates made here (`cryptography`). A caller without the token (or with a wrong one) is
refused UNAUTHENTICATED, changes nothing and learns nothing; health stays open; without a
client certificate a mutual-TLS server cannot be reached at all; strangers get seat play only."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import grpc
import numpy as np
import pytest
from conftest import BackgroundShard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleet_play import CONFIG, wait_for
from gamefleet_operator.registry import StoreRegistry, shard_state
from router_helpers import BackgroundRouter

from gameserver.cli import health, serve
from gameserver.client import (
    Credentials,
    FleetClient,
    NotFound,
    PermissionDenied,
    SecurityError,
    Unauthenticated,
    Unavailable,
)
from gameserver.fleet.store import FleetStore
from gameserver.replay.buffer import ReplayBuffer
from gameserver.replay.client import ReplayClient
from gameserver.replay.service import ReplayServer
from gameserver.router.topology import StaticSource
from gameserver.shard.server import FleetOptions
from gameserver.sharded_client import ShardedClient
from gameserver.wire.security import PLAINTEXT
from gameserver.wire.services import LIVENESS_SERVICE

TOKEN = "fleet-token-0123456789abcdef"
REFUSALS = ("the fleet's token is wrong", "this fleet needs a token")


class Pems(NamedTuple):
    ca: bytes
    cert: bytes  # the fleet's: its servers', and their client certificate to each other
    key: bytes
    client_cert: bytes  # a trainer's
    client_key: bytes
    rogue_cert: bytes  # signed by another CA
    rogue_key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    name: str, key, issuer_name: str, issuer_key, *, ca: bool = False, hosts: bool = False
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pems() -> Pems:
    ca_key, rogue_ca_key = _key(), _key()
    ca = _certificate("gamefleet test CA", ca_key, "gamefleet test CA", ca_key, ca=True)
    fleet_key, client_key, rogue_key = _key(), _key(), _key()
    return Pems(
        ca,
        _certificate("fleet", fleet_key, "gamefleet test CA", ca_key, hosts=True),
        _pem_key(fleet_key),
        _certificate("trainer", client_key, "gamefleet test CA", ca_key),
        _pem_key(client_key),
        _certificate("rogue", rogue_key, "rogue CA", rogue_ca_key),
        _pem_key(rogue_key),
    )


def fleet_credentials(p: Pems) -> Credentials:
    return Credentials(p.cert, p.key, p.ca, TOKEN)


def trainer(p: Pems, token: str | None = TOKEN) -> Credentials:
    return Credentials(p.client_cert, p.client_key, p.ca, token)


@pytest.fixture(scope="module")
def door(pems: Pems) -> Iterator[tuple[BackgroundShard, BackgroundRouter]]:
    """A shard and a router over it, both mutual TLS with the fleet's token."""
    shard = BackgroundShard(seed=3, credentials=fleet_credentials(pems))
    router = BackgroundRouter(StaticSource([shard.address]), credentials=fleet_credentials(pems))
    try:
        yield shard, router
    finally:
        router.stop()
        shard.stop()


def refused(call, code=grpc.StatusCode.UNAUTHENTICATED) -> str:
    with pytest.raises(Exception) as caught:
        call()
    error = caught.value
    assert getattr(error, "code", None) == code, error
    return error.details


def test_without_the_token_or_with_a_wrong_one_every_game_call_is_refused_and_changes_nothing(door, pems):
    shard, router = door
    with FleetClient(router.address, timeout=10, credentials=trainer(pems)) as client:
        ids = client.create(4, CONFIG, seeds=np.arange(4, dtype=np.uint64)).ids
        client.step(ids, np.zeros((4, CONFIG.players), np.int32))
    before = shard.state()
    actions = np.zeros((4, CONFIG.players), np.int32)
    for address in (shard.address, router.address):
        for token in (None, "not-the-token"):
            with FleetClient(address, timeout=10, credentials=trainer(pems, token)) as stranger:
                calls = [
                    lambda: stranger.create(2, CONFIG),
                    lambda: stranger.states(ids),
                    lambda: stranger.step(ids, actions),
                    lambda: stranger.reset(ids),
                    lambda: stranger.close(ids),
                    stranger.topology,
                ]
                for call in calls:
                    details = refused(call)
                    assert details.startswith(REFUSALS), details  # nothing of the games in it
                    assert all(str(i) not in details for i in ids)
                with stranger.stream() as stream:
                    refused(lambda: stream.step(ids, actions))
                assert stranger.healthy()  # health stays open
                assert stranger.healthy(LIVENESS_SERVICE)
    after = shard.state()
    assert before.keys() == after.keys()
    for name, array in before.items():
        np.testing.assert_array_equal(after[name], array, err_msg=name)


def test_with_the_certificate_and_the_token_games_step_through_router_shard_and_sharded_client(door, pems):
    shard, router = door
    for address in (router.address, shard.address):
        with FleetClient(address, timeout=10, credentials=trainer(pems)) as client:
            created = client.create(3, CONFIG)
            reply = client.step(created.ids, np.zeros((3, CONFIG.players), np.int32))
            assert (reply.observations.tick == 1).all()
            with client.stream() as stream:
                assert (
                    stream.step(created.ids, np.zeros((3, CONFIG.players), np.int32)).observations.tick == 2
                ).all()
            assert client.close(created.ids) == 3
    with ShardedClient(router.address, timeout=10, credentials=trainer(pems)) as client:
        ids = client.create(2, CONFIG).ids
        assert (client.step(ids, np.zeros((2, CONFIG.players), np.int32)).observations.tick == 1).all()
        client.close(ids)


def test_mutual_tls_turns_away_clients_without_a_certificate_of_the_fleets_ca(door, pems):
    shard, router = door
    others = [
        Credentials(ca=pems.ca, token=TOKEN),  # no client certificate
        Credentials(pems.rogue_cert, pems.rogue_key, pems.ca, TOKEN),  # one of another CA
        Credentials(token=TOKEN),  # plaintext
    ]
    for address in (shard.address, router.address):
        for credentials in others:
            with FleetClient(address, timeout=3, credentials=credentials) as client:
                with pytest.raises(Unavailable):
                    client.create(1, CONFIG)
                assert not client.healthy()  # not even health: no TLS session without a certificate


def test_strangers_get_seat_play_only(door, pems):
    """With a fleet token, a caller without it may join an open seat and move it with its seat
    token; it cannot read, reset or close the game, nor play a self-play game."""
    shard, router = door
    with FleetClient(router.address, timeout=10, credentials=trainer(pems)) as owner:
        open_game = owner.create(1, CONFIG, open_seats=True, turn_deadline_ms=50).ids
        self_play = owner.create(1, CONFIG).ids
    with FleetClient(router.address, timeout=10, credentials=trainer(pems, None)) as stranger:
        seat, seat_token = stranger.join(int(open_game[0]))
        moves = np.zeros(1, np.int32)
        reply = stranger.step_seats(open_game, moves, [seat], [seat_token])  # the other seat passes
        assert (reply.observations.tick == 1).all()
        assert refused(
            lambda: stranger.step_seats(open_game, moves, [seat], [seat_token ^ 1]),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        before = shard.state()
        for call in (
            lambda: stranger.states(open_game),
            lambda: stranger.reset(open_game),
            lambda: stranger.close(open_game),
            lambda: stranger.step(self_play, np.zeros((1, CONFIG.players), np.int32)),
        ):
            refused(call)
        with pytest.raises((Unauthenticated, PermissionDenied, Exception)):
            stranger.join(int(self_play[0]))  # not an open-seat game
        after = shard.state()
        for name, array in before.items():
            np.testing.assert_array_equal(after[name], array, err_msg=name)
    with FleetClient(router.address, timeout=10, credentials=trainer(pems)) as owner:
        assert (owner.states(open_game).tick == 1).all()  # the fleet's token is trusted
        owner.close(np.concatenate([open_game, self_play]))


def test_a_token_without_tls_and_tls_without_a_token():
    """The two halves work alone: a plaintext fleet with a token, and `gamefleet up`'s default."""
    shard = BackgroundShard(seed=4, credentials=Credentials(token=TOKEN))
    try:
        with FleetClient(shard.address, timeout=10) as stranger:
            refused(lambda: stranger.create(1, CONFIG))
            assert stranger.healthy()
        with FleetClient(shard.address, timeout=10, credentials=Credentials(token=TOKEN)) as client:
            client.close(client.create(1, CONFIG).ids)
    finally:
        shard.stop()


def test_the_replay_service_checks_the_token(pems):
    from gameserver.replay.transitions import transition_spec

    buffer = ReplayBuffer(transition_spec(CONFIG), 16)
    with ReplayServer(buffer, credentials=fleet_credentials(pems)) as server:
        with ReplayClient(server.address, timeout=5, credentials=trainer(pems, None)) as stranger:
            refused(stranger.info)
        with ReplayClient(server.address, timeout=5, credentials=trainer(pems)) as client:
            assert client.info()["size"] == 0


def test_shards_move_games_between_them_under_mutual_tls_and_the_token(redis_server, pems):
    def member(name: str) -> BackgroundShard:
        options = FleetOptions(
            redis_server.url, "tls", "log", shard_name=name, dead_after_s=1.0, heartbeat_s=0.1
        )
        return BackgroundShard(seed=1, fleet=options, credentials=fleet_credentials(pems))

    a, b = member("pod-a"), member("pod-b")
    try:

        def in_rings() -> bool:
            rings = [s.server.member.ring for s in (a, b)]
            return all(r is not None and sorted(r.shards) == sorted([a.address, b.address]) for r in rings)

        wait_for(in_rings, "both shards in both rings")
        with FleetClient(a.address, timeout=10, credentials=trainer(pems)) as client:
            ids = client.create(4, CONFIG, placement_key="moved").ids
            for _ in range(3):
                client.step(ids, np.zeros((4, CONFIG.players), np.int32))
            before = client.states(ids)
        store = FleetStore(redis_server.url, "tls", ttl_s=60)
        StoreRegistry(store).request_drain("pod-a", time.time())
        wait_for(
            lambda: any(shard_state(i.state, i.load).name == "DRAINED" for i in store.list_shards(5)),
            "shard a to hand its games over (HandOver/Adopt under TLS)",
        )
        assert a.server.games.active_games == 0
        with FleetClient(b.address, timeout=10, credentials=trainer(pems)) as client:
            after = client.states(ids)
            np.testing.assert_array_equal(after.tick, before.tick)
            np.testing.assert_array_equal(after.codes, before.codes)
    finally:
        a.stop()
        b.stop()


def _serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_bad_security_settings_stop_the_start_with_a_clear_message(tmp_path: Path, pems):
    cert = tmp_path / "tls.crt"
    cert.write_bytes(pems.cert)
    cases = {
        ("--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(cert)): "TLS certificate",
        ("--tls-cert", str(cert)): "certificate and its key come together",
        ("--token-file", str(tmp_path / "none")): "token file",
    }
    for argv, message in cases.items():
        with pytest.raises(SystemExit, match=message):
            serve.shard_server(_serve_args(*argv))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecurityError, match="empty"):
        Credentials.from_files(token_file=tmp_path / "empty")
    assert Credentials.from_env({}) == PLAINTEXT


def test_gamefleet_health_speaks_tls_without_a_token(door, pems, tmp_path: Path):
    shard, _ = door
    for name, data in (("ca", pems.ca), ("crt", pems.client_cert), ("key", pems.client_key)):
        (tmp_path / name).write_bytes(data)
    parser = argparse.ArgumentParser()
    health.add_parser(parser.add_subparsers())
    argv = ["health", shard.address, "--tls-ca", str(tmp_path / "ca"), "--tls-cert", str(tmp_path / "crt")]
    args = parser.parse_args([*argv, "--tls-key", str(tmp_path / "key")])
    assert health.run(args) == 0


def test_a_plaintext_health_port_beside_a_mutual_tls_port(pems):
    """What the kubelet's gRPC probes reach where the fleet speaks TLS: health only, no games."""
    shard = BackgroundShard(seed=5, credentials=fleet_credentials(pems), health_port=0)
    try:
        assert shard.server.health_port
        with FleetClient(f"127.0.0.1:{shard.server.health_port}", timeout=5) as probe:
            assert probe.healthy()
            refused(lambda: probe.create(1, CONFIG), grpc.StatusCode.UNIMPLEMENTED)
    finally:
        shard.stop()


def test_gamefleet_up_runs_its_fleet_and_its_players_under_mutual_tls_and_the_token(pems, tmp_path: Path):
    """The README's secure `gamefleet up`: its shards and router take the same flags, and its
    self-play clients the same credentials (a plaintext or tokenless player could not connect)."""
    for name, data in (("ca", pems.ca), ("crt", pems.cert), ("key", pems.key), ("token", TOKEN.encode())):
        (tmp_path / name).write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-m", "gameserver.cli", "up", "--shards", "1", "--games", "8", "--seconds", "1",
         "--size", "8", "--max-ticks", "30", "--tls-cert", str(tmp_path / "crt"), "--tls-key",
         str(tmp_path / "key"), "--tls-ca", str(tmp_path / "ca"), "--token-file", str(tmp_path / "token")],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "steps/s" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "gameserver.cli", "up", "--tls-cert", str(tmp_path / "crt")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode != 0 and "key" in missing.stderr + missing.stdout


def test_game_ids_cannot_be_guessed_from_a_placement_key_or_another_game(door, pems):
    """Two creates under one placement key: each a run of consecutive ids (the log's compact
    form), starting at random, so neither the key nor a game's id names the other create's games."""
    _, router = door
    with FleetClient(router.address, timeout=10, credentials=trainer(pems)) as client:
        first, second = (client.create(4, CONFIG, placement_key="known").ids for _ in range(2))
        for ids in (first, second):
            assert np.all(np.diff(ids) == 1)
        assert first[0] >> np.uint64(32) == second[0] >> np.uint64(32)  # the key's hash, known
        assert abs(int(second[0]) - int(first[-1])) > 1 << 8  # but not where the games lie
        with pytest.raises(NotFound):  # the neighbours of a known game are nobody's
            client.states(np.array([first[-1] + np.uint64(1)], np.uint64))
