"""Waits until a consumer group has committed the end of every partition of a topic.

    .venv/bin/python scripts/drained.py BOOTSTRAP TOPIC GROUP TIMEOUT_SECONDS

scripts/dev runs it when it stops, after the gateway: the local broker keeps the inbound topic in
memory, so the event source mapping must ingest (and commit) everything the gateway acknowledged
before the broker goes. Exits 0 once drained, 1 at the timeout (saying how many records are
left at least). It never joins the group or commits: it reads the group's committed offsets and,
from there, the records themselves. tansu's high watermark cannot be used: it answers ListOffsets
with 1 for a partition that holds one batch of 750 records.
"""
import sys
import time

from confluent_kafka import Consumer, TopicPartition

# How long a read from the committed offsets must find nothing to call a partition drained.
QUIET_SECONDS = 1.0


def main():
    bootstrap, topic, group, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    offsets = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                        "enable.auto.commit": False})
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}-drained",
                       "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    partitions = sorted(offsets.list_topics(topic, timeout=10).topics[topic].partitions)
    deadline = time.monotonic() + timeout
    said = 0.0
    left = None
    while time.monotonic() < deadline:
        committed = offsets.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        starts = {tp.partition: max(tp.offset, 0) for tp in committed}
        reader.assign([TopicPartition(topic, p, starts[p]) for p in partitions])
        seen = {}
        quiet_until = time.monotonic() + QUIET_SECONDS
        while time.monotonic() < quiet_until:
            for message in reader.consume(num_messages=1000, timeout=0.2):
                if message.error() is None and message.offset() >= starts[message.partition()]:
                    seen[message.partition()] = max(seen.get(message.partition(), -1),
                                                    message.offset())
        if not seen:
            offsets.close()
            reader.close()
            return 0
        left = sum(last + 1 - starts[p] for p, last in seen.items())
        if time.monotonic() - said >= 2:
            print(f"   ingesting the last {left}+ records of {topic}", flush=True)
            said = time.monotonic()
        time.sleep(0.2)
    offsets.close()
    reader.close()
    print(f"drained.py: at least {left} records of {topic} not committed by {group} after "
          f"{timeout:.0f} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
