"""One benchmark client run: confluent-kafka, acks=all, 300-byte JSON records.

Modes:
  max  N            produce N records as fast as the client can; print throughput
  rate R SECONDS    produce R records/s for SECONDS; print acknowledgement latency p50/p99
Prints one JSON line."""
import json
import sys
import time

from confluent_kafka import Producer

config = json.loads(sys.argv[1])
mode = sys.argv[2]
topic = config.pop("topic")
producer = Producer(config)
record = json.dumps({"event": "purchase", "item": "x" * 230, "price": 12.5, "n": 0}).encode()
record = record[:300].ljust(300, b" ")
assert len(record) == 300
latencies = []
errors = []


def acked(sent_at):
    def callback(error, _message):
        if error is not None:
            errors.append(error.name())
        else:
            latencies.append(time.perf_counter() - sent_at)
    return callback


def produce(callback):
    while True:
        try:
            producer.produce(topic, record, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.001)


# Warm up: connect, authenticate, learn metadata.
producer.produce(topic, record)
producer.flush(30)

if mode == "max":
    n = int(sys.argv[3])
    started = time.perf_counter()
    for _ in range(n):
        produce(acked(time.perf_counter()))
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    print(json.dumps({"records": len(latencies), "errors": len(errors), "seconds": elapsed,
                      "records_per_s": len(latencies) / elapsed}))
else:
    rate, seconds = float(sys.argv[3]), float(sys.argv[4])
    interval = 1.0 / rate
    started = time.perf_counter()
    next_at = started
    while next_at - started < seconds:
        now = time.perf_counter()
        if now < next_at:
            producer.poll(min(next_at - now, 0.0005))
            continue
        produce(acked(next_at))
        next_at += interval
        producer.poll(0)
    producer.flush(60)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(json.dumps({"records": len(latencies), "errors": len(errors), "rate": rate,
                      "p50_ms": pick(0.50), "p99_ms": pick(0.99)}))
