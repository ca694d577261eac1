"""The driver of scripts/bench-e2e, one step per call (`--step`): `queries` (query latency, on
small collections of their own, whatever else is stored), `freshness` (at a steady rate),
`burst` (sustained throughput and per-process CPU), `load` (produce and wait for the
acknowledgements only) and `expect` (wait until a collection's count reaches a figure, then
check that it stays there). Prints figures; asserts nothing.

Freshness: event k (in acknowledgement order) counts as queryable at the first poll of the
query API whose count reaches k. The count is polled every 10 ms, so figures are late by up to
one poll interval, never early."""
import argparse
import json
import os
import threading
import time
import urllib.parse
import urllib.request

from confluent_kafka import Producer

TICK = os.sysconf("SC_CLK_TCK")
FILLER = "x" * 200


def event(n, tag):
    # About 300 bytes of JSON, as in the gateway benchmark.
    return json.dumps({"n": n, "tag": tag, "user": {"id": n % 1000, "plan": "pro"},
                       "price": n % 97, "filler": FILLER})


class Query:
    def __init__(self, address, project, read_key):
        self.base = f"http://{address}/3.0/projects/{project}/queries"
        self.read_key = read_key

    def ask(self, analysis, **params):
        params["api_key"] = self.read_key
        url = f"{self.base}/{analysis}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=120) as answer:
            return json.load(answer)["result"]

    def count(self, collection):
        return self.ask("count", event_collection=collection)


def producer(args):
    return Producer({
        "bootstrap.servers": args.gateway, "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN", "sasl.username": args.project, "sasl.password": args.write_key,
        "acks": "all", "enable.idempotence": True, "linger.ms": 5,
        "queue.buffering.max.messages": 1000000, "message.timeout.ms": 120000,
    })


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def cpu_seconds(pid):
    """User + system CPU of a process and, separately, of its librdkafka threads."""
    def ticks(path):
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    total = ticks(f"/proc/{pid}/stat") / TICK
    rdkafka = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            if name.startswith("rdk:"):
                rdkafka += ticks(f"/proc/{pid}/task/{tid}/stat") / TICK
        except FileNotFoundError:
            pass
    return total, rdkafka


def processes(pids_file):
    out = {}
    with open(pids_file) as f:
        for line in f:
            name, pid = line.split()
            out[name] = int(pid)
    # moto_server and tansu run as children of the names scripts/dev started only when wrapped;
    # here they are the processes themselves.
    return out


def paced(client_args, query, collection, rate, seconds):
    """Sends `rate` events/s for `seconds` to `collection` while polling its count every 10 ms.
    Returns (acknowledgement latencies from produce() to the delivery report, freshness
    latencies from the delivery report to the first poll whose count reaches the event, events
    sent, seconds it took to produce them). Event k in acknowledgement order counts as
    queryable at the first poll whose count reaches k."""
    total = rate * seconds
    sent = [None] * total
    acked = [None] * total
    polls = []
    done = threading.Event()

    def poller():
        while not done.is_set():
            count = query.count(collection)
            polls.append((time.monotonic(), count))
            time.sleep(0.01)

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    p = producer(client_args)

    def on_delivery(n):
        def callback(error, _message):
            if error is None:
                acked[n] = time.monotonic()
        return callback

    start = time.monotonic()
    for n in range(total):
        due = start + n / rate
        while True:
            now = time.monotonic()
            if now >= due:
                break
            p.poll(min(due - now, 0.005))
        sent[n] = time.monotonic()
        p.produce(collection, event(n, collection), on_delivery=on_delivery(n))
        p.poll(0)
    p.flush(120)
    produced_in = time.monotonic() - start
    acknowledgements = [a - s for s, a in zip(sent, acked) if a is not None]
    acks = sorted(a for a in acked if a is not None)
    # Wait (up to 120 s) until the polled count reaches every acknowledgement.
    deadline = time.monotonic() + 120
    while (not polls or polls[-1][1] < len(acks)) and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    thread.join()
    latencies = []
    i = 0
    for k, ack in enumerate(acks, start=1):
        while i < len(polls) and polls[i][1] < k:
            i += 1
        if i == len(polls):
            break
        latencies.append(max(0.0, polls[i][0] - ack))
    return acknowledgements, latencies, total, produced_in


def freshness(args, query):
    acknowledged, latencies, total, produced_in = paced(
        args, query, "fresh", args.rate, args.seconds)
    print(f"freshness at {args.rate} events/s for {args.seconds} s "
          f"(produced in {produced_in:.1f} s, {len(acknowledged)} of {total} acknowledged, "
          f"{len(latencies)} counted):")
    if latencies:
        print(f"  acknowledgement → counted by the query API: "
              f"p50 {percentile(latencies, 50) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, 99) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms (target p99 ≤ 1000 ms)")


def throughput(args, query, pids):
    collection = "burst"
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    p = producer(args)
    acked = [0]

    def callback(error, _message):
        if error is None:
            acked[0] += 1

    start = time.monotonic()
    for n in range(args.burst):
        while True:
            try:
                p.produce(collection, event(n, "burst"), on_delivery=callback)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(300)
    acked_at = time.monotonic() - start
    deadline = time.monotonic() + 600
    count = 0
    while time.monotonic() < deadline:
        count = query.count(collection)
        if count >= acked[0]:
            break
        time.sleep(0.05)
    wall = time.monotonic() - start
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    print(f"sustained: {args.burst} events produced as fast as the client can; "
          f"{acked[0]} acknowledged in {acked_at:.1f} s, all {count} counted after {wall:.1f} s "
          f"→ {count / wall:,.0f} events/s end to end")
    print("  CPU per process over the burst (of one core: busiest = the bottleneck):")
    busiest = None
    for name in pids:
        used = after[name][0] - before[name][0]
        share = used / wall
        per_event = used / max(count, 1) * 1e6
        line = f"    {name:<8} {used:7.1f} CPU-s  {share * 100:5.0f}% of a core  {per_event:7.1f} CPU-µs/event"
        if name == "esm":
            rdk = after[name][1] - before[name][1]
            line += (f"  (librdkafka consumer threads {rdk / max(count, 1) * 1e6:.1f} µs/event; "
                     f"the rest is the mapping's loop and the ingest handler)")
        print(line)
        if busiest is None or share > busiest[1]:
            busiest = (name, share)
    if busiest:
        print(f"  bottleneck: {busiest[0]} ({busiest[1] * 100:.0f}% of a core); "
              f"the machine has {os.cpu_count()} cores for every process")


def produce(args, collection, total):
    """Produces `total` events to `collection` as fast as the client can; returns how many were
    acknowledged."""
    p = producer(args)
    acked = [0]

    def callback(error, _message):
        if error is None:
            acked[0] += 1

    for n in range(total):
        while True:
            try:
                p.produce(collection, event(n, collection), on_delivery=callback)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(300)
    return acked[0]


def wait_count(query, collection, expected, timeout):
    deadline = time.monotonic() + timeout
    count = query.count(collection)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        count = query.count(collection)
    return count


# Query latency is measured on collections of their own, small and fixed, while the store around
# them grows: what a customer with a small collection sees beside a large one.
SMALL = {"single": 1, "thousand": 1000}
REPEATS = 20


def queries(args, query):
    for collection, size in SMALL.items():
        have = query.count(collection)
        if have < size:
            produce(args, collection, size - have)
            wait_count(query, collection, size, 120)
    stored = query.count("burst") + query.count("fresh")
    every = json.dumps([{"property_name": "n", "operator": "gte", "property_value": 0}])
    cases = [
        ("extraction, 1-event collection", "extraction", {"event_collection": "single"}),
        ("filtered count, 1-event collection", "count",
         {"event_collection": "single", "filters": every}),
        ("filtered count, 1,000-event collection", "count",
         {"event_collection": "thousand", "filters": every}),
        ("count without filters (hourly counters), 1,000-event collection", "count",
         {"event_collection": "thousand"}),
    ]
    print(f"query latency with {stored:,} other events stored ({REPEATS} runs each; "
          f"target ≤ 200 ms):")
    for label, analysis, params in cases:
        times = []
        for _ in range(REPEATS):
            start = time.monotonic()
            result = query.ask(analysis, **params)
            times.append(time.monotonic() - start)
        size = len(result) if isinstance(result, list) else result
        print(f"  {label:<66} p50 {percentile(times, 50) * 1000:6.1f} ms, "
              f"max {max(times) * 1000:6.1f} ms (result {size})")


def main():
    parser = argparse.ArgumentParser()
    for name in ["gateway", "query", "project", "write-key", "read-key", "pids"]:
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--step", required=True,
                        choices=["queries", "freshness", "burst", "load", "expect"])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--burst", type=int, default=100000)
    parser.add_argument("--collection", default="restart")
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    query = Query(args.query, args.project, args.read_key)
    if args.step == "queries":
        queries(args, query)
    elif args.step == "freshness":
        freshness(args, query)
    elif args.step == "burst":
        throughput(args, query, processes(args.pids))
    elif args.step == "load":
        acked = produce(args, args.collection, args.events)
        print(f"  {acked} of {args.events} events acknowledged; "
              f"{query.count(args.collection)} counted so far")
    else:
        count = wait_count(query, args.collection, args.events, 300)
        time.sleep(5)
        later = query.count(args.collection)
        verdict = "each once" if count == later == args.events else "NOT each once"
        print(f"  after the restart: {later} of {args.events} counted ({verdict})")


if __name__ == "__main__":
    main()
