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
"""
import argparse
import gc
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
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

    def one_at_a_time(environ, start_response):
        # The backend does all its work inside this call; the response body is already built.
        with lock:
            return app(environ, start_response)

    run_simple(args.host, args.port, one_at_a_time, threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
