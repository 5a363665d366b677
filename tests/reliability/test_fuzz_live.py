"""End-to-end fuzz: mutated venue frames (seeded byte flips, truncations, splices, key
deletions of real frames) pushed into live daemon sessions over the sims' sockets. The daemon
keeps running on the same connection, counts what it rejects (engine.counters.bad_frames), its
book is unchanged, and a trip afterwards still ends flat by the sims' books."""

from __future__ import annotations

import random

import trio

from .harness import (
    NADO_PRODUCTS,
    NADO_VENUE,
    OX_MARKETS,
    OX_VENUE,
    daemon_yaml,
    running_daemon,
    start_nado,
    start_ox,
    trip,
    venue_flat,
    wait_for,
)

FRAMES_PER_VENUE = 400
SEED = 7

OX_SEEDS = [
    b'{"table":"order","data":[{"notice":"OrderClosed","accountId":"1","orderId":"1000000000000000001",'
    b'"marketCode":"ETH-USD-SWAP-LIN","side":"BUY","orderType":"LIMIT","price":"1","quantity":"1",'
    b'"remainQuantity":"1","status":"CANCELED_BY_USER","timestamp":"1"}]}',
    b'{"table":"balance","accountId":"1","timestamp":"1","data":[{"instrumentId":"OX","total":"1000"}]}',
    b'{"event":"cancelorder","submitted":false,"code":"100005","tag":"k9","data":{"orderId":"1"}}',
    b'{"table":"ticker","data":[{"marketCode":"BTC-USD-SWAP-LIN","markPrice":"60000"}]}',
]
NADO_SEEDS = [
    b'{"type":"order_update","timestamp":"1","product_id":2,"digest":"0x' + b"ab" * 32 + b'","amount":"0","reason":"cancelled"}',
    b'{"type":"fill","timestamp":"1","product_id":2,"subaccount":"0x' + b"cd" * 32 + b'","order_digest":"0x' + b"ab" * 32
    + b'","filled_qty":"1","remaining_qty":"0","original_qty":"1","price":"1","is_taker":true,"is_bid":true}',
    b'{"type":"position_change","timestamp":"1","product_id":2,"subaccount":"0x' + b"cd" * 32
    + b'","isolated":false,"amount":"1","v_quote_amount":"-1","reason":"match_orders"}',
]


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    b = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rng.choice(b'{}[]":,0123456789x-\\')
        elif op == 1:
            b = b[:i]
        elif op == 2:
            b[i:i] = rng.choice([b"null", b"1e999", b"-", b'"', b"\\u0000", b"9" * 300, b"[]", b"{}"])
        elif op == 3:
            b = b + b[: rng.randrange(len(b) + 1)]
        else:
            b = b.replace(rng.choice([b'"product_id"', b'"orderId"', b'"digest"', b'"data"', b'"type"']), b'"zz"', 1)
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        b = bytearray(b.decode("utf-8", "replace").encode())
    return bytes(b)


async def test_mutated_frames_into_live_sessions(tmp_path):
    rng = random.Random(SEED)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            nado = await start_nado(nursery)
            await ox.place(10, OX_MARKETS[1], side="SELL", price="999999")
            nado.place(10, NADO_PRODUCTS[0])
            text = daemon_yaml(tmp_path, ox.venue_yaml() + nado.venue_yaml())
            async with running_daemon(tmp_path, text, {**ox.env(), **nado.env()}) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == 10
                               and d.engine.state.open_count(NADO_VENUE) == 10)
                conns_before = (d.venues[OX_VENUE].session.connections_made,)
                ox_conns = [c for c in ox.sim._conns.values() if c.account is not None]
                nado_conns = [c for c in nado.sim._sub_conns if c.wallet]
                for _ in range(FRAMES_PER_VENUE):
                    f = mutate(rng, OX_SEEDS)
                    for c in ox_conns:
                        await ox.sim._send(c, f.decode())
                    g = mutate(rng, NADO_SEEDS)
                    for c in nado_conns:
                        await c.send.send((g, "fuzz"))
                    if _ % 50 == 0:
                        await trio.sleep(0)
                await wait_for(lambda: d.engine.counters.bad_frames >= FRAMES_PER_VENUE // 2)
                assert (d.venues[OX_VENUE].session.connections_made,) == conns_before
                assert d.engine.state.open_count(OX_VENUE) == 10 and not d.engine.latch.tripped
                await trip(d)
                with trio.fail_after(10):
                    await wait_for(lambda: not ox.open_orders() and nado.open_count() == 0
                                   and venue_flat(d, OX_VENUE) and venue_flat(d, NADO_VENUE))
                print(f"live fuzz: {2 * FRAMES_PER_VENUE} frames, bad_frames={d.engine.counters.bad_frames}")
            nursery.cancel_scope.cancel()
