"""Waits until a consumer group has committed the end of every partition of a topic.

    .venv/bin/python scripts/drained.py BOOTSTRAP TOPIC GROUP TIMEOUT_SECONDS

scripts/dev runs it when it stops, after the gateway: the local broker keeps the inbound topic in
memory, so the event source mapping must ingest (and commit) everything the gateway acknowledged
before the broker goes. Exits 0 once drained, 1 at the timeout (saying how many records are
left). It never joins the group or commits: it only reads the group's committed offsets.
"""
import sys
import time

from confluent_kafka import Consumer, TopicPartition


def main():
    bootstrap, topic, group, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                       "enable.auto.commit": False})
    partitions = sorted(reader.list_topics(topic, timeout=10).topics[topic].partitions)
    deadline = time.monotonic() + timeout
    said = 0.0
    left = None
    while time.monotonic() < deadline:
        ends = [reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions]
        committed = reader.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        left = sum(max(0, end - max(tp.offset, 0)) for end, tp in zip(ends, committed))
        if left == 0:
            reader.close()
            return 0
        if time.monotonic() - said >= 2:
            print(f"   ingesting the last {left} records of {topic}", flush=True)
            said = time.monotonic()
        time.sleep(0.2)
    reader.close()
    print(f"drained.py: {left} records of {topic} not committed by {group} after {timeout:.0f} s",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
