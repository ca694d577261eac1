"""moto in server mode, applying one request at a time.

    .venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p 4566

DynamoDB applies every request to an item atomically: a conditional UpdateItem never interleaves
with another write of the same item. moto's server answers each connection on a thread of its
own, and its DynamoDB backend takes no locks, so two concurrent UpdateItems of one item can lose
an increment (seen here: hourly counters short by about 0.5% once four ingest invocations ran at
once) or both pass the same condition. One lock around each request gives moto DynamoDB's
guarantee back. Little is lost: moto is CPU-bound under Python's GIL anyway, and connections are
still served on threads, so idle keep-alive clients do not block each other.

Everything else is moto's own server (`moto_server`), started the same way.

With `--state-file PATH`, the queues (SQS) outlive the process: their state is written to PATH
after every request that can change it (a temporary file renamed over the last, so a crash leaves
the previous whole snapshot) and read back at start. The local stack keeps its dead letter queue
this way across restarts; its tables live in dynalite, which keeps its own. moto has no
persistence of its own, and SQS traffic here is the rare dead letter, so a whole snapshot per
change costs little.
"""
import argparse
import copyreg
import gc
import io
import json
import os
import pickle
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

# SQS requests (JSON protocol, `X-Amz-Target: AmazonSQS.<Action>`) that change nothing.
SQS_READS = {"GetQueueUrl", "GetQueueAttributes", "ListQueues", "ListQueueTags",
             "ListDeadLetterSourceQueues", "ListMessageMoveTasks"}


class QueueState:
    """The SQS backend's queues, per account and region, saved to and loaded from one file."""

    # A queue holds locks, which pickle refuses; a restored queue gets fresh ones (nothing holds
    # them between requests: every request runs under the server's one lock).
    _dispatch = copyreg.dispatch_table.copy()
    _dispatch[type(threading.RLock())] = lambda _lock: (threading.RLock, ())
    _dispatch[type(threading.Lock())] = lambda _lock: (threading.Lock, ())

    def __init__(self, path):
        self.path = path

    @staticmethod
    def _backends():
        from moto.backends import get_backend
        return get_backend("sqs")

    def load(self):
        if not os.path.exists(self.path):
            return 0
        with open(self.path, "rb") as file:
            saved = pickle.load(file)
        backends = self._backends()
        for (account, region), queues in saved.items():
            backends[account][region].queues = queues
        return sum(len(queues) for queues in saved.values())

    def save(self):
        snapshot = {(account, region): backend.queues
                    for account, per_region in self._backends().items()
                    for region, backend in per_region.items() if backend.queues}
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer)
        pickler.dispatch_table = self._dispatch
        pickler.dump(snapshot)
        temporary = f"{self.path}.tmp"
        with open(temporary, "wb") as file:
            file.write(buffer.getvalue())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)


def changes_queues(environ):
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("AmazonSQS."):
        return target.removeprefix("AmazonSQS.") not in SQS_READS
    # The query protocol (older SDKs) names the action in the form body or query string: save
    # after any request addressed to SQS that way, reads included (rare locally).
    return "sqs" in environ.get("HTTP_AUTHORIZATION", "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--state-file", help="keep the queues in this file across restarts")
    args = parser.parse_args()
    # moto builds some URLs (SQS queue URLs) from this, as its own launcher sets it.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()
    # Every stored item is a few dozen Python objects, and the collector's full passes walk them
    # all: with hundreds of thousands of items, moto spent more and more of each request
    # collecting. Objects of the server itself are frozen out of it, and full passes are rarer.
    gc.freeze()
    gc.set_threshold(100_000, 50, 1_000)

    state = QueueState(args.state_file) if args.state_file else None
    if state is not None:
        print(json.dumps({"queues_restored": state.load(), "state_file": state.path}), flush=True)

    def one_at_a_time(environ, start_response):
        # The backend does all its work inside this call; the response body is already built.
        with lock:
            response = app(environ, start_response)
            if state is not None and changes_queues(environ):
                state.save()
            return response

    run_simple(args.host, args.port, one_at_a_time, threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
