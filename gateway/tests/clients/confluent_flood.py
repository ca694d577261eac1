"""Produces `count` small records ("{prefix}{i:06d}") as fast as confluent-kafka (librdkafka) takes
them, then waits for every delivery report, and prints one JSON line:
{"acked": [i, ...], "failed": n, "errors": {name: count}, "undelivered": n, "seconds": s}.

Argument: a JSON object with bootstrap, mechanism, username, password, topic, count, prefix and
optional "config" (extra librdkafka properties)."""
import json
import sys
import time

from confluent_kafka import Producer

args = json.loads(sys.argv[1])
config = {
    "bootstrap.servers": args["bootstrap"],
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": args["mechanism"],
    "sasl.username": args["username"],
    "sasl.password": args["password"],
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "message.timeout.ms": 8000,
}
config.update(args.get("config", {}))
acked, errors = [], {}
prefix = args["prefix"]


def delivered(error, message):
    if error is not None:
        errors[error.name()] = errors.get(error.name(), 0) + 1
    else:
        acked.append(int(message.value()[len(prefix):]))


producer = Producer(config)
started = time.monotonic()
for i in range(args["count"]):
    value = f"{prefix}{i:06d}".encode()
    while True:
        try:
            producer.produce(args["topic"], value=value, on_delivery=delivered)
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)
left = producer.flush(60)
print(json.dumps({"acked": acked, "failed": sum(errors.values()), "errors": errors,
                  "undelivered": left, "seconds": round(time.monotonic() - started, 2)}))
