"""Fleets on an external Redis with the operator in the loop: kopf renders the fleet into kmock, the
kubelet runs it as real pods, and the operator reads shard load, asks shards to drain and purges
the fleet's keys through the real Redis (StoreRegistries), a password-protected redis-server on the
pod network's gateway. A client plays through the router Service all along and counts the steps
the fleet acknowledged: a roll, an autoscale up and down, a `kubectl scale` up and down must keep
every one of them; deleting the fleet must leave nothing of it in Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gamefleet_operator.registry import StoreRegistries
from k8s_operator.harness import FLEETS_URL, wait_for
from k8s_operator.harness import Cluster as Api
from test_dockerfile import IMAGE

from .cluster import Cluster, repository
from .controller import KubeletController
from .image import Image
from .operated import ready
from .redis_fleet import SECRET, ExternalRedis, Player, fleet_body, password_secret


@pytest.fixture
def registries() -> StoreRegistries:
    """The operator's real registries: load, drain requests and the purge go through Redis."""
    return StoreRegistries()


@pytest.fixture
def cluster(image: Image) -> Iterator[Cluster]:
    """conftest's cluster; on the way out, the whole log of every pod, the ones that went included
    (a roll, a scale-down): what a failed test shows."""
    with Cluster(image) as running:
        yield running
        for pod in [*running.gone, *running.pods.values()]:
            print(f"=== {pod.name} {pod.ip} {pod.status}\n{pod.log()}")


@pytest.fixture
def store(cluster: Cluster, tmp_path: Path) -> Iterator[ExternalRedis]:
    with ExternalRedis(cluster.network.gateway, tmp_path) as server:
        yield server


async def start_fleet(fleets: Api, store: ExternalRedis, name: str, spec: dict[str, Any]) -> None:
    """The password Secret, then the fleet; back once it is Ready."""
    await fleets.apply(password_secret())
    await fleets.apply(fleet_body(name, store, spec))
    await ready(fleets, name)


def shard_pods(cluster: Cluster, name: str) -> list[str]:
    return sorted(n for n in list(cluster.pods) if n.startswith(f"{name}-shard-"))


def ready_shards(cluster: Cluster, name: str) -> list[str]:
    return [n for n in shard_pods(cluster, name) if (p := cluster.pods.get(n)) and p.status.ready]


async def in_thread(call: Callable[..., Any], *args: Any) -> Any:
    """Blocking client calls off the loop (kmock serves from it)."""
    return await asyncio.to_thread(call, *args)


async def ring_is(player: Player, shards: list[str], timeout: float = 30) -> None:
    """Until the router routes over exactly these shards (it polls the registry every 5 s)."""
    deadline = time.monotonic() + timeout
    while (ring := await in_thread(player.topology)) != shards:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the router's ring is {ring}, not {shards}")
        await asyncio.sleep(0.2)


def gone_pods(cluster: Cluster, name: str) -> list[Any]:
    return [p for p in cluster.gone if p.name == name]


def assert_drained_cleanly(cluster: Cluster, pod: str) -> None:
    """The shard's process handed its games over (its log says so) and ended within its grace."""
    (gone,) = gone_pods(cluster, pod)
    end = gone.status.termination
    log = gone.log()
    assert end is not None and not end.killed and end.exit_code == 0, (end, log[-3000:])
    assert "handed" in log and "drained" in log, log[-3000:]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_template_change_rolls_the_shards_one_at_a_time_and_loses_no_acknowledged_step(
    fleets: Api, kubelet: KubeletController, cluster: Cluster, store: ExternalRedis
) -> None:
    """A new image tag and spec.game.width: new templates. The StatefulSet rolls highest ordinal
    first, each new pod Ready before the next old one goes; each old shard hands its games over
    through Redis on SIGTERM; the router Deployment surges a new router before the old one goes,
    which finishes the calls it forwarded (its grace covers their whole budget). The client
    stepping all along, through whichever router the Service names, loses no acknowledged step."""
    await start_fleet(
        fleets, store, "rolled", {"autoscaling": {"enabled": False}, "durability": {"mode": "log"}}
    )
    player = Player(cluster, "rolled")
    await ring_is(player, ["rolled-shard-0", "rolled-shard-1"])
    with player.playing(create_up_to=12):
        await wait_for(
            lambda: (len(player.batches) == 12 and len(player.acks) > 60) or player.errors, 60, "play"
        )
        start = time.monotonic()
        new_image = f"{repository(IMAGE)}:next"
        await fleets.patch("rolled", {"spec": {"image": new_image, "game": {"width": 24}}})
        rolled = [(verb, f"rolled-shard-{i}") for i in (1, 0) for verb in ("deleted", "created", "ready")]

        def shard_events() -> list[tuple[str, str]]:
            return [(v, p) for at, v, p in list(cluster.events) if at >= start and "-shard-" in p]

        def rolled_out() -> bool:
            images = {pod.container["image"] for pod in list(cluster.pods.values())}
            return shard_events() == rolled and images == {new_image}

        await wait_for(lambda: rolled_out() or player.errors, 120, "the shards and routers rolled")
        end = time.monotonic()
        await ready(fleets, "rolled")
        acked_at_roll = len(player.acks)
        await wait_for(lambda: len(player.acks) > acked_at_roll + 24 or player.errors, 30, "play after")
    player.finish()
    assert player.errors == [], player.errors
    assert shard_events() == rolled
    routers = [(v, p) for at, v, p in list(cluster.events) if at >= start and "-router-" in p]
    assert [v for v, _ in routers].count("deleted") >= 1 and ("ready", routers[0][1]) in routers, routers
    for pod in ("rolled-shard-0", "rolled-shard-1"):
        assert cluster.pods[pod].env["GAMEFLEET_GAME_WIDTH"] == "24"
        assert_drained_cleanly(cluster, pod)
    assert player.acks_between(start, end) > 0, "the client played during the roll"
    assert await in_thread(player.mismatches) == []
    assert fleets.events("RollingShards"), "the operator announced the roll"


async def shard_holds_games(store: ExternalRedis, fleet: str, pod: str, timeout: float = 30) -> None:
    """Until the shard's heartbeat in Redis reports games (what the autoscaler and drains go by)."""

    def holds() -> bool:
        info = store.shards(fleet).get(pod)
        return info is not None and info.load > 0

    deadline = time.monotonic() + timeout
    while not await in_thread(holds):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pod} reported no games: {await in_thread(store.shards, fleet)}")
        await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_autoscaler_adds_a_shard_under_load_and_drains_it_when_the_games_close(
    fleets: Api, kubelet: KubeletController, cluster: Cluster, store: ExternalRedis
) -> None:
    """30 games on one shard of 32 (target 0.75): the operator raises spec.shards, the new shard
    joins the router's ring and takes the games its keys own on first use. Closing most games
    brings the recommendation back to one shard; after the stabilisation window the operator asks
    the leaving shard to drain, and lowers the StatefulSet only once it reports drained: its open
    games, handed over through Redis, keep every acknowledged step."""
    autoscaling = {"minShards": 1, "maxShards": 3, "targetUtilisation": 0.75}
    spec = {"shards": 1, "game": {"capacityPerShard": 32}, "autoscaling": autoscaling}
    await start_fleet(fleets, store, "auto", spec)
    player = Player(cluster, "auto")
    await ring_is(player, ["auto-shard-0"])
    await in_thread(player.create, 15)  # 30 games: utilisation 0.94
    await wait_for(lambda: fleets.fleet("auto")["spec"]["shards"] == 2, 30, "the autoscaler's scale-up")
    assert fleets.events("Autoscaled")
    await wait_for(
        lambda: ready_shards(cluster, "auto") == ["auto-shard-0", "auto-shard-1"], 60, "shard-1 Ready"
    )
    await ring_is(player, ["auto-shard-0", "auto-shard-1"])
    await in_thread(player.step_all)  # the games whose keys shard-1 owns now move there
    await shard_holds_games(store, "auto", "auto-shard-1")

    holders = await in_thread(player.holders)
    keep = holders["auto-shard-0"][:2] + holders["auto-shard-1"][:2]
    await in_thread(player.close, [b for b in player.open if b not in keep])  # 8 games: one shard
    with player.playing():
        await wait_for(lambda: fleets.fleet("auto")["spec"]["shards"] == 1 or player.errors, 30, "scale-down")
        await wait_for(lambda: fleets.events("Draining") or player.errors, 10, "a drain request")
        await wait_for(
            lambda: shard_pods(cluster, "auto") == ["auto-shard-0"] or player.errors, 60, "shard-1 gone"
        )
    player.finish()
    assert player.errors == [], player.errors
    assert "auto-shard-1" in fleets.events("Draining")[0]["message"]
    (gone,) = gone_pods(cluster, "auto-shard-1")
    assert "drain requested by the operator" in gone.log()
    assert_drained_cleanly(cluster, "auto-shard-1")
    assert fleets.replicas("auto") == 1
    assert await in_thread(player.mismatches) == []


async def scale(fleets: Api, name: str, replicas: int) -> dict[str, Any]:
    """`kubectl scale gf/<name> --replicas=N`: a PATCH of the scale subresource; the Scale back."""
    url = f"{FLEETS_URL}/{name}/scale"
    response = await fleets.kmock.patch(url, json={"spec": {"replicas": replicas}})
    assert response.status == 200, await response.text()
    return await response.json()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_kubectl_scale_up_and_down_moves_live_games_and_loses_none(
    fleets: Api, kubelet: KubeletController, cluster: Cluster, store: ExternalRedis
) -> None:
    """/scale to 3: the new shards join the ring and take their keys' games on first use; /scale
    to 1 while the client keeps stepping: both leaving shards are asked to drain, hand their games
    to shard-0 and go only then, and no acknowledged step is lost."""
    await start_fleet(fleets, store, "scaled", {"shards": 1, "autoscaling": {"enabled": False}})
    player = Player(cluster, "scaled")
    await ring_is(player, ["scaled-shard-0"])
    await in_thread(player.create, 16)
    await in_thread(player.step_all)

    assert (await scale(fleets, "scaled", 3))["spec"]["replicas"] == 3
    everyone = ["scaled-shard-0", "scaled-shard-1", "scaled-shard-2"]
    await wait_for(lambda: ready_shards(cluster, "scaled") == everyone, 60, "three shards Ready")
    await ring_is(player, everyone)
    with player.playing():
        await shard_holds_games(store, "scaled", "scaled-shard-1")
        await shard_holds_games(store, "scaled", "scaled-shard-2")
        assert (await scale(fleets, "scaled", 1))["spec"]["replicas"] == 1
        await wait_for(
            lambda: shard_pods(cluster, "scaled") == ["scaled-shard-0"] or player.errors, 60, "one shard"
        )
        acked = len(player.acks)
        await wait_for(
            lambda: len(player.acks) > acked + 16 or player.errors, 30, "play after the scale-down"
        )
    player.finish()
    assert player.errors == [], player.errors
    asked = " ".join(e["message"] for e in fleets.events("Draining"))
    for pod in ("scaled-shard-1", "scaled-shard-2"):
        assert pod in asked
        (gone,) = gone_pods(cluster, pod)
        assert "drain requested by the operator" in gone.log()
        assert_drained_cleanly(cluster, pod)
    assert await in_thread(player.mismatches) == []
    await wait_for(lambda: fleets.status("scaled").get("shards") == 1, 10, "status.shards 1")
    response = await fleets.kmock.get(f"{FLEETS_URL}/scaled/scale")
    assert (await response.json())["status"]["replicas"] == 1


@pytest.mark.slow
@pytest.mark.asyncio
async def test_deleting_the_fleet_removes_every_pod_and_purges_its_keys_from_redis(
    fleets: Api, kubelet: KubeletController, cluster: Cluster, store: ExternalRedis
) -> None:
    """The finalizer purges `gamefleet:<namespace>.<name>:*`; the fleet's pods go with it (owner
    references), and nothing they write on their way out may bring keys back: open games,
    records and log entries, registry and drain entries, all gone."""
    await start_fleet(
        fleets, store, "doomed", {"autoscaling": {"enabled": False}, "durability": {"mode": "log"}}
    )
    player = Player(cluster, "doomed")
    await ring_is(player, ["doomed-shard-0", "doomed-shard-1"])
    await in_thread(player.create, 8)
    for _ in range(3):
        await in_thread(player.step_all)
    player.finish()
    assert any(":snap:" in key for key in await in_thread(store.keys, "doomed"))  # the open games' records

    response = await fleets.kmock.delete(f"{FLEETS_URL}/doomed")
    assert response.status == 200, await response.text()
    await wait_for(lambda: fleets.fleet("doomed") is None, 60, "the fleet gone (finalizer done)")
    await wait_for(lambda: fleets.events("CleanedUp"), 10, "the CleanedUp Event")  # kopf posts it after
    await wait_for(lambda: not cluster.pods, 60, "every pod gone")
    user_owned = {("Secret", SECRET)}  # the user's, not the fleet's: it stays
    await wait_for(lambda: set(kubelet.objects()) <= user_owned, 30, "every child gone from the API")
    assert await in_thread(store.keys, "doomed") == []
