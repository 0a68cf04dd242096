"""The partition a key goes to: Kafka's Java default partitioner (murmur2), as librdkafka and Faust use.

Every producer uses it, so the person-keyed topics stay co-partitioned
(docs/decisions/0010-co-partitioned-by-person.md).
"""

from __future__ import annotations


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java default partitioner (and librdkafka's murmur2) picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2(key: bytes) -> int:
    """Kafka's murmur2 hash of ``key`` as a signed 32-bit int (``org.apache.kafka.common.utils.Utils``)."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(key)
    h = (0x9747B28C ^ length) & mask
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = key[i] | (key[i + 1] << 8) | (key[i + 2] << 16) | (key[i + 3] << 24)
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= key[whole + 2] << 16
    if rest >= 2:
        h ^= key[whole + 1] << 8
    if rest >= 1:
        h ^= key[whole]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h
