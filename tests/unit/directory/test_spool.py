"""The containers that keep a run's memory flat: a spool of planned changes, a set of ids."""

from __future__ import annotations

import tracemalloc

from connector.services.directory.plan import CreateUser
from connector.services.directory.spool import IdSet, Spool


def create(n: int) -> CreateUser:
    return CreateUser(
        f"id-{n}",
        f"uid=u{n},dc=example,dc=com",
        f"u{n}@example.com",
        "U",
        f"N{n}",
        frozenset({"Set"}),
    )


def test_a_spool_keeps_order_and_length_across_memory_and_disk() -> None:
    spool: Spool[CreateUser] = Spool(in_memory=10)
    for n in range(2_345):
        spool.append(create(n))
    assert len(spool) == 2_345 and spool
    assert [c.stable_id for c in spool] == [f"id-{n}" for n in range(2_345)]
    assert spool[0] == create(0) and spool[1_500] == create(1_500) and spool[-1] == create(2_344)
    # Two walks at once each keep their place.
    first, second = iter(spool), iter(spool)
    assert next(first) == next(second) == create(0)
    assert [next(first) for _ in range(20)][-1] == create(20)
    assert next(second) == create(1)
    assert spool == [create(n) for n in range(2_345)]
    assert not Spool()


def test_a_spool_holds_a_bounded_amount_in_memory() -> None:
    def peak(count: int) -> int:
        tracemalloc.start()
        spool: Spool[CreateUser] = Spool()
        for n in range(count):
            spool.append(create(n))
        assert sum(1 for _ in spool) == count
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(5_000), peak(50_000)
    assert large < small * 1.5, (small, large)


def test_an_id_set_remembers_what_it_saw() -> None:
    ids = IdSet()
    assert ids.add("a") and not ids.add("a")
    values = [f"0000{n:08x}-8545-1041-8a14-f331160a703f" for n in range(20_000)]
    for value in values:
        ids.add(value)
    assert len(ids) == 20_001
    assert all(v in ids for v in values) and "a" in ids
    assert "not-there" not in ids and 5 not in ids
