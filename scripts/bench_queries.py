"""The analyses benchmark's client (scripts/bench-queries): loads a collection through the
gateway, then times each analysis against the query API and reads the query process's peak
memory around it (VmHWM, reset before each query through /proc/PID/clear_refs)."""

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_e2e import producer  # noqa: E402  (the same client settings as the e2e benchmark)

COLLECTION = "analyses"
COUNTRIES = ["NO", "PE", "JP", "DE", "BR", "IN", "US", "FR", "KE", "NZ"]
ACTIONS = ["view", "view", "view", "cart", "cart", "buy", "view"]
USERS = 20_000
DAY_MS = 86_400_000


def window():
    """The previous 7 complete UTC days, as previous_7_days resolves them."""
    today = datetime.datetime.now(datetime.timezone.utc).replace(
        hour=0, minute=0, second=0, microsecond=0)
    start = today - datetime.timedelta(days=7)
    return int(start.timestamp() * 1000), int(today.timestamp() * 1000)


def stamp(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(i, start_ms, step_ms):
    return json.dumps({
        "price": (i * 37) % 1000 / 10,
        "country": COUNTRIES[i % len(COUNTRIES)],
        "action": ACTIONS[i % len(ACTIONS)],
        "user": {"id": f"u{(i * 7919) % USERS}"},
        "keen": {"timestamp": stamp(start_ms + i * step_ms)},
    })


def load(args, total):
    start_ms, end_ms = window()
    step_ms = max(1, (end_ms - start_ms) // total)
    p = producer(args)
    acked = [0]

    def callback(error, _message):
        if error is None:
            acked[0] += 1

    for i in range(total):
        while True:
            try:
                p.produce(COLLECTION, event(i, start_ms, step_ms), on_delivery=callback)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(600)
    return acked[0]


class Query:
    def __init__(self, address, project, read_key):
        self.base = f"http://{address}/3.0/projects/{project}/queries"
        self.read_key = read_key

    def ask(self, analysis, params):
        encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
        encoded["api_key"] = self.read_key
        url = f"{self.base}/{analysis}?{urllib.parse.urlencode(encoded)}"
        with urllib.request.urlopen(url, timeout=600) as answer:
            return json.load(answer)["result"]


def query_pid(pids_file):
    with open(pids_file) as f:
        for line in f:
            name, pid = line.split()
            if name == "query":
                return int(pid)
    raise SystemExit("no query process in " + pids_file)


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    for name in ["gateway", "query", "project", "write-key", "read-key", "pids"]:
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    query = Query(args.query, args.project, args.read_key)
    pid = query_pid(args.pids)
    base = {"event_collection": COLLECTION, "timeframe": "previous_7_days"}

    started = time.monotonic()
    acked = load(args, args.events)
    print(f"loaded {acked:,} of {args.events:,} events in {time.monotonic() - started:.0f} s")
    deadline = time.monotonic() + 1800
    while query.ask("count", base) < acked and time.monotonic() < deadline:
        time.sleep(1)
    stored = query.ask("count", base)
    print(f"stored and counted: {stored:,} (after {time.monotonic() - started:.0f} s)")
    if stored != acked:
        raise SystemExit(f"only {stored} of {acked} events counted")

    buy = [{"property_name": "action", "operator": "eq", "property_value": "buy"}]
    steps = [
        {"event_collection": COLLECTION, "actor_property": "user.id",
         "filters": [{"property_name": "action", "operator": "eq", "property_value": a}]}
        for a in ["view", "cart", "buy"]
    ]
    # The extraction goes last: it holds every event in memory, and the allocator keeps what it
    # grew to, which would hide the other analyses' peaks.
    cases = [
        ("count (hourly counters)", "count", base, 1),
        ("count with a filter", "count", {**base, "filters": buy}, 1),
        ("sum, group_by country", "sum",
         {**base, "target_property": "price", "group_by": "country"}, 1),
        ("sum, interval daily over 7 days", "sum",
         {**base, "target_property": "price", "interval": "daily"}, 1),
        ("count, interval daily (counters)", "count", {**base, "interval": "daily"}, 1),
        ("median of price", "median", {**base, "target_property": "price"}, 1),
        ("funnel, 3 steps on user.id", "funnel",
         {"timeframe": "previous_7_days", "steps": steps}, 3),
        ("extraction (every event)", "extraction", base, 1),
    ]
    rows = []
    for label, analysis, params, reads in cases:
        times, peaks, befores = [], [], []
        for _ in range(args.runs):
            reset_peak(pid)
            befores.append(status_kib(pid, "VmRSS:"))
            start = time.monotonic()
            result = query.ask(analysis, params)
            times.append(time.monotonic() - start)
            peaks.append(status_kib(pid, "VmHWM:"))
        if analysis == "extraction" and len(result) != stored:
            raise SystemExit(f"the extraction returned {len(result)} of {stored} events")
        rows.append((label, statistics.median(times), max(peaks), min(befores),
                     reads * stored, result))
    extraction = rows[-1][1]
    print(f"\n{args.runs} runs each over {stored:,} events (median wall time; the query "
          f"process's resident memory before the query and at its peak during it):")
    print(f"  {'analysis':<36} {'time':>9} {'÷ extraction':>13} {'RSS before':>11} "
          f"{'peak':>8} {'events read/s':>14}")
    for label, seconds, peak, before, read, result in rows:
        counters = "counters" in label
        rate = "(counters)" if counters else f"{read / seconds:,.0f}"
        print(f"  {label:<36} {seconds * 1000:7.0f} ms {seconds / extraction:12.3f} "
              f"{before / 1024:8.0f} MB {peak / 1024:5.0f} MB {rate:>14}")
    print("\nanswers (a check that each ran): "
          + "; ".join(f"{row[0]}: {summary(row[-1])}" for row in rows))


def summary(result):
    if isinstance(result, list):
        return f"{len(result)} items"
    if isinstance(result, float):
        return f"{result:.2f}"
    return str(result)


if __name__ == "__main__":
    main()
