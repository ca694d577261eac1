"""The benchmark client: confluent-kafka, acks=all, 300-byte JSON records, one producer straight
to the backing broker and one through the gateway, in one process. The two take turns in short
slices (which one goes first alternates), so both see the same machine: on a shared host the load
of the neighbours drifts over seconds, and slices far apart in time compare badly.

  bench_gateway.py PATHS_JSON max N SLICES
      each slice, each path produces N/SLICES records as fast as it can, then flushes
  bench_gateway.py PATHS_JSON rate R SECONDS SLICES
      each slice, each path produces R records/s for SECONDS, then flushes; latency is measured
      from the moment a record was due (not when it was handed over), so a client that falls
      behind shows it

PATHS_JSON is {"paths": [{"name", "config" (the producer's, with "topic")}, ...], "processes":
{name: pid}}: the direct path and one path per gateway (a second build can run beside the
first, for a comparison paired slice by slice), and the server processes whose CPU time is
counted while each path runs (a gateway's under its path's name), besides this client's own.
Prints one JSON line with each slice's figures (the summary is the shell script's); with
CLIENT_STATS=1 also the client's own librdkafka statistics of each second, per path."""
import gc
import json
import os
import sys
import time

from confluent_kafka import Producer

described = json.loads(sys.argv[1])
mode = sys.argv[2]
paths = {}
# CLIENT_STATS=1: the client's own librdkafka statistics each second, per path: how long a record
# waited in the client's queue, and the round trip of its produce requests as the client saw it.
client_stats = {path["name"]: [] for path in described["paths"]}


def stats_callback(name):
    def callback(text):
        for broker in json.loads(text)["brokers"].values():
            if broker["nodeid"] >= 0 and broker["rtt"]["cnt"]:
                client_stats[name].append({window: [broker[window]["p50"], broker[window]["p99"]]
                                           for window in ("int_latency", "outbuf_latency", "rtt")})
    return callback


for path in described["paths"]:
    topic = path["config"].pop("topic")
    if os.environ.get("CLIENT_STATS") == "1":
        path["config"].update({"statistics.interval.ms": 1000,
                               "stats_cb": stats_callback(path["name"])})
    paths[path["name"]] = (Producer(path["config"]), topic)
processes = dict(described["processes"], client=os.getpid())
hz = os.sysconf("SC_CLK_TCK")
record = json.dumps({"event": "purchase", "item": "x" * 230, "price": 12.5, "n": 0}).encode()
record = record[:300].ljust(300, b" ")
assert len(record) == 300


def cpu_ticks():
    """CPU ticks (user + system) used so far by each watched process."""
    ticks = {}
    for name, pid in processes.items():
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks[name] = int(fields[11]) + int(fields[12])
    return ticks


def produce(producer, topic, callback):
    while True:
        try:
            producer.produce(topic, record, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.001)


def run_max(producer, topic, n):
    acked, errors = [0], []

    def callback(error, _message):
        if error is not None:
            errors.append(error.name())
        else:
            acked[0] += 1

    started = time.perf_counter()
    for _ in range(n):
        produce(producer, topic, callback)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    return {"records": acked[0], "errors": len(errors), "records_per_s": acked[0] / elapsed}


def run_rate(producer, topic, rate, seconds):
    latencies, errors = [], []

    def acked(due):
        def callback(error, _message):
            if error is not None:
                errors.append(error.name())
            else:
                latencies.append(time.perf_counter() - due)
        return callback

    interval = 1.0 / rate
    started = time.perf_counter()
    due = started
    while due - started < seconds:
        now = time.perf_counter()
        if now < due:
            # Serve acknowledgements, then sleep until the next record is due: poll() counts
            # whole milliseconds, so a shorter wait in it would spin a core that the servers
            # under test need (the client is meant to stand on a host of its own).
            producer.poll(0)
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            continue
        produce(producer, topic, acked(due))
        due += interval
        producer.poll(0)
    producer.flush(60)
    return {"errors": len(errors), "latencies": latencies}


def percentile(ordered, q):
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# Warm up both: connect, authenticate, learn metadata.
for producer, topic in paths.values():
    producer.produce(topic, record)
    producer.flush(30)
# The client's own pauses are not what is measured: no cyclic garbage is made here.
gc.disable()

slices = int(sys.argv[-1])
names = list(paths)
results = {name: {"slices": [], "ticks": {p: 0 for p in processes}, "seconds": 0, "records": 0}
           for name in names}
pooled = {name: [] for name in names}
for index in range(slices):
    # Each path goes first as often as the others.
    order = names[index % len(names):] + names[:index % len(names)]
    for name in order:
        producer, topic = paths[name]
        ticks, started = cpu_ticks(), time.perf_counter()
        if mode == "max":
            outcome = run_max(producer, topic, int(sys.argv[3]) // slices)
        else:
            outcome = run_rate(producer, topic, float(sys.argv[3]), float(sys.argv[4]))
            latencies = sorted(outcome.pop("latencies"))
            pooled[name] += latencies
            outcome.update(records=len(latencies), p50_ms=percentile(latencies, 0.5),
                           p99_ms=percentile(latencies, 0.99))
        results[name]["seconds"] += time.perf_counter() - started
        for process, used in cpu_ticks().items():
            results[name]["ticks"][process] += used - ticks[process]
        results[name]["records"] += outcome["records"]
        results[name]["slices"].append(outcome)
for name, latencies in pooled.items():
    if client_stats[name]:
        results[name]["client_stats"] = client_stats[name]
    # Cores each process kept busy while this path ran.
    result = results[name]
    result["cores"] = {p: t / hz / result["seconds"] for p, t in result["ticks"].items()}
    if latencies:
        latencies.sort()
        results[name]["p50_ms"] = percentile(latencies, 0.5)
        results[name]["p99_ms"] = percentile(latencies, 0.99)
print(json.dumps(results))
sys.stdout.flush()
os._exit(0)  # no need to tear the producers down
