"""The driver of scripts/bench-fairness: one project (the quiet one) sends 100 events/s while
another floods as fast as its clients can (several producers, so several connections), and the quiet project's figures are compared with a
run of its own without the flood, measured in the same stack. Prints figures; asserts nothing.

Acknowledgement latency and freshness as bench_e2e.paced measures them (the count polled every
10 ms, so freshness is late by up to one poll interval, never early)."""
import argparse
import multiprocessing
import time

from bench_e2e import Query, event, paced, percentile, producer


class Args:
    def __init__(self, gateway, project, write_key):
        self.gateway, self.project, self.write_key = gateway, project, write_key


def quiet(gateway, project, write_key, query, collection, rate, seconds):
    """Sends `rate` events/s for `seconds`; returns (ack latencies, freshness latencies, sent)."""
    acks, fresh, total, _ = paced(Args(gateway, project, write_key), query, collection, rate,
                                  seconds)
    return acks, fresh, total


def flood(gateway, project, write_key, stop_at, counter, last):
    """Produces as fast as one client can until `stop_at` (monotonic); adds its deliveries to
    `counter` and keeps in `last` the latest time (monotonic) one of them was acknowledged."""
    p = producer(Args(gateway, project, write_key))
    delivered = [0]
    acked_at = [0.0]

    def callback(error, _message):
        if error is None:
            delivered[0] += 1
            acked_at[0] = time.monotonic()

    n = 0
    while time.monotonic() < stop_at:
        try:
            p.produce("flood", event(n, "flood"), on_delivery=callback)
            n += 1
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    p.flush(60)
    with counter.get_lock():
        counter.value += delivered[0]
        last.value = max(last.value, acked_at[0])


def summary(label, acks, fresh, total):
    if not acks or not fresh:
        print(f"  {label}: nothing acknowledged and counted")
        return None
    ack99, fresh99 = percentile(acks, 99), percentile(fresh, 99)
    print(f"  {label}: {len(acks)} of {total} acknowledged; acknowledgement p50 "
          f"{percentile(acks, 50) * 1000:.0f} ms, p99 {ack99 * 1000:.0f} ms; freshness p50 "
          f"{percentile(fresh, 50) * 1000:.0f} ms, p99 {fresh99 * 1000:.0f} ms")
    return ack99, fresh99


def main():
    parser = argparse.ArgumentParser()
    for name in ["gateway", "query", "quiet-project", "quiet-write-key", "quiet-read-key",
                 "flood-project", "flood-write-key"]:
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--flood-connections", type=int, default=4)
    args = parser.parse_args()
    query = Query(args.query, args.quiet_project, args.quiet_read_key)

    print(f"quiet project: {args.rate} events/s for {args.seconds} s, alone, then beside a flood")
    alone = summary("alone", *quiet(args.gateway, args.quiet_project, args.quiet_write_key,
                                    query, "quiet_alone", args.rate, args.seconds))
    counter = multiprocessing.Value("q", 0)
    last = multiprocessing.Value("d", 0.0)
    started = time.monotonic()
    stop_at = started + args.seconds + 2
    flooders = [multiprocessing.Process(
        target=flood, args=(args.gateway, args.flood_project, args.flood_write_key, stop_at, counter,
                     last))
        for _ in range(args.flood_connections)]
    for flooder in flooders:
        flooder.start()
    time.sleep(2)  # the flood is running before the quiet project starts
    flooded = summary("beside the flood", *quiet(
        args.gateway, args.quiet_project, args.quiet_write_key, query, "quiet_flooded",
        args.rate, args.seconds))
    for flooder in flooders:
        flooder.join()
    # The flood's clients keep what they queued and deliver it after stop_at: its rate is over
    # the time until its last acknowledgement.
    took = max(last.value - started, 1e-9)
    print(f"  the flooding project ({args.flood_connections} producers) had {counter.value} "
          f"events acknowledged in {took:.0f} s ({counter.value / took:.0f} events/s)")
    if alone and flooded:
        print(f"  ratio beside the flood / alone: acknowledgement p99 "
              f"{flooded[0] / alone[0]:.2f}x, freshness p99 {flooded[1] / alone[1]:.2f}x")


if __name__ == "__main__":
    main()
