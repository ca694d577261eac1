"""Attempts one thing the produce-only gateway refuses, with kafka-python (3.x), and prints one JSON
line with what the client raised: {"exception": class name | null, "errno": Kafka error code |
null, "message": text, "where": the step that raised, "logged": {error class: code} of the Kafka
errors it only logged}.

Argument: a JSON object with bootstrap, mechanism, username, password, topic and "action":
- "produce": create a KafkaProducer and send one record to "topic";
- "assign": a KafkaConsumer without a group assign()s partition 0 of "topic" and polls (which
  needs ListOffsets, then Fetch); with "seek": an offset, it starts there and only Fetches.
Optional "timeout": seconds (default 20)."""
import json
import logging
import re
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

args = json.loads(sys.argv[1])
timeout = args.get("timeout", 20)
common = {
    "bootstrap_servers": args["bootstrap"],
    "security_protocol": args.get("security_protocol", "SASL_PLAINTEXT"),
    "sasl_mechanism": args["mechanism"],
    "sasl_plain_username": args["username"],
    "sasl_plain_password": args["password"],
    "request_timeout_ms": timeout * 1000,
    "bootstrap_timeout_ms": timeout * 1000,
}
where = "connect"


class Logged(logging.Handler):
    """Kafka errors kafka-python only logs (it retries a failed bootstrap until max_block_ms
    instead of raising the authentication failure): {"SaslAuthenticationFailedError": 58}."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.errors = {}

    def emit(self, record):
        for code, name in re.findall(r"\[Error (-?\d+)\] (\w+)", record.getMessage()):
            self.errors[name] = int(code)


logged = Logged()
logging.getLogger("kafka").addHandler(logged)
logging.getLogger("kafka").setLevel(logging.WARNING)
logging.getLogger("kafka").propagate = False


def report(error):
    return {"exception": None if error is None else type(error).__name__,
            "errno": getattr(error, "errno", None), "message": str(error or ""), "where": where,
            "logged": logged.errors}


def produce():
    global where
    producer = KafkaProducer(acks="all", max_block_ms=timeout * 1000, **common)
    where = "send"
    producer.send(args["topic"], b'{"refused": true}').get(timeout=timeout)
    producer.close(5)


def assign():
    global where
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", **common)
    where = "assign"
    partition = TopicPartition(args["topic"], 0)
    consumer.assign([partition])
    if args.get("seek") is not None:
        # A known position: the consumer goes straight to Fetch, without ListOffsets.
        consumer.seek(partition, args["seek"])
    where = "poll"
    records = consumer.poll(timeout_ms=timeout * 1000)
    where = "poll returned %d batches" % len(records)
    consumer.close()


try:
    {"produce": produce, "assign": assign}[args["action"]]()
    answer = report(None)
except Exception as error:  # noqa: BLE001 - what was raised is the answer
    answer = report(error)
print(json.dumps(answer))
