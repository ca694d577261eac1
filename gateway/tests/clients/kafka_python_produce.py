"""Produces records through the gateway with kafka-python (3.x: idempotent by default) and prints
one JSON line: {"delivered": n, "errors": [{"index": i, "error": class name, "errno": n}],
"offsets": [[partition, offset], ...]}.

Argument: a JSON object with bootstrap, mechanism, username, password, topic, records
([{"value": str} or {"value_len": n, "fill": one character}, optionally "partition": int]) and
optional "config" (extra KafkaProducer keyword arguments). With "flush_each" (the default) every
record is flushed before the next is sent, so each travels in a batch of its own; without it all
are sent first and flushed together."""
import json
import sys

from kafka import KafkaProducer

args = json.loads(sys.argv[1])
config = {
    "bootstrap_servers": args["bootstrap"],
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": args["mechanism"],
    "sasl_plain_username": args["username"],
    "sasl_plain_password": args["password"],
    "request_timeout_ms": 15000,
    "delivery_timeout_ms": 30000,
    "linger_ms": 0,
}
config.update(args.get("config", {}))
producer = KafkaProducer(**config)
errors, offsets = [], []
flush_each = args.get("flush_each", True)
futures = []
for index, record in enumerate(args["records"]):
    if "value_len" in record:
        value = record.get("fill", "x").encode() * record["value_len"]
    else:
        value = record["value"].encode()
    try:
        futures.append(producer.send(args["topic"], value=value, partition=record.get("partition")))
    except Exception as error:  # noqa: BLE001 - refused by the client itself, before sending
        futures.append(error)
    if flush_each:
        producer.flush(35)
producer.flush(35)
for index, future in enumerate(futures):
    try:
        if isinstance(future, Exception):
            raise future
        metadata = future.get(timeout=35)
        offsets.append([metadata.partition, metadata.offset])
    except Exception as error:  # noqa: BLE001 - the test wants the client's error, whatever it is
        errors.append({"index": index, "error": type(error).__name__,
                       "errno": getattr(error, "errno", None), "text": str(error)})
producer.close(10)
print(json.dumps({"delivered": len(offsets), "errors": errors, "offsets": offsets,
                  "idempotent": bool(producer.config["enable_idempotence"])}))
