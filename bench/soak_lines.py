"""The soak's lines, shared by the simulated kubelet (bench/soak_kubelet.py) and the
accountant (bench/soak_account.py): a line's message length is a function of its
container and sequence number, so the accountant knows the on-disk bytes of every line
it did not receive from Kafka without the simulator listing 50 million lengths.
"""
import zlib

# The runtime's split of a long message into `P` fragments ending with an `F`.
FRAGMENT = 16 * 1024
# `<RFC 3339 time with ns> <stdout|stderr> <P|F> ` before each fragment, `\n` after:
# the time is always 30 characters (`2026-12-04T10:31:00.123456789Z`).
CRI_OVERHEAD = 30 + 1 + 6 + 1 + 1 + 1 + 1


def message_length(key, seq, long_every):
    """The length of line `seq` of container `key`: 60–200 bytes; one line in
    `long_every` 20–50 KB (split into P/F fragments)."""
    h = zlib.crc32(f"{key} {seq}".encode())
    if long_every and seq % long_every == long_every // 2:
        return 20000 + h % 30001
    return 60 + h % 141


def disk_bytes(key, seq, long_every):
    """What line `seq` of `key` takes in its CRI log file, fragments included."""
    total = message_length(key, seq, long_every)
    fragments = -(-total // FRAGMENT)
    return total + CRI_OVERHEAD * fragments
