"""Ids sort in creation order, even many within one millisecond and across threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from service_runtime.database import new_id


def test_ids_made_in_a_burst_increase_strictly() -> None:
    ids = [new_id("key") for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("key_") and len(i) <= 32 for i in ids)


def test_ids_made_on_several_threads_are_unique() -> None:
    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: [new_id("mon") for _ in range(2000)], range(4)))
    everything = [i for batch in batches for i in batch]
    assert len(set(everything)) == len(everything)
    assert all(batch == sorted(batch) for batch in batches)
