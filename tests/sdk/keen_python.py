#!/usr/bin/env python3
"""Drives Keen's official Python SDK (PyPI `keen` 0.7.0, unmodified) against a query server.

Run it with the project venv's interpreter (scripts/setup-test-env installs keen==0.7.0 there):

    .venv/bin/python tests/sdk/keen_python.py < calls.json

stdin: one JSON object

    {"project_id": "...", "read_key": "...", "master_key": "...",
     "base_url": "http://127.0.0.1:PORT",          # scheme + host[:port], no /3.0
     "timeout": 30,                                 # optional, seconds (SDK default 305)
     "calls": [{"method": "count", "kwargs": {"event_collection": "purchases"}},
               {"method": "funnel", "kwargs": {"steps": [...], "all_keys": true}}, ...]}

Each call is `KeenClient.<method>(*args, **kwargs)` (`args` optional). stdout: one JSON line per
call, in order:

    {"ok": true, "result": <what the SDK returned>}
    {"ok": false, "error": str(e), "error_type": "KeenApiError", "error_code": ..., "status": ...,
     "body": <the error JSON the SDK parsed, KeenApiError only>}

`status` is the HTTP status of the call's last response (null when no response arrived, e.g. the
SDK refused the call itself: ValueError for a bad order_by/limit, InvalidEnvironmentError for a
missing key). See tests/sdk/README.md for what 0.7.0 puts on the wire.
"""
import json
import sys

from keen import utilities
from keen.client import KeenClient
from keen.exceptions import KeenApiError

SDK_VERSION = "0.7.0"

METHODS = {
    "count", "count_unique", "sum", "average", "minimum", "maximum", "median", "percentile",
    "select_unique", "extraction", "multi_analysis", "funnel",
    "get_collection", "get_all_collections", "delete_events",
}


def main():
    if utilities.VERSION != SDK_VERSION:
        sys.exit("keen_python.py: expects keen {}, found {} (run scripts/setup-test-env)".format(
            SDK_VERSION, utilities.VERSION))
    spec = json.load(sys.stdin)
    base_url = spec.get("base_url")
    if base_url:
        # The SDK glues "{base_url}/3.0/..." without stripping a trailing slash.
        base_url = base_url.rstrip("/")
    timeout = spec.get("timeout", 30)
    client = KeenClient(
        spec["project_id"],
        read_key=spec.get("read_key"),
        master_key=spec.get("master_key"),
        base_url=base_url,
        get_timeout=timeout,
        post_timeout=timeout,
    )
    session = client.api.session
    # Not an SDK change: keep requests from applying HTTP(S)_PROXY or ~/.netrc (netrc credentials
    # would replace the SDK's Authorization header) to a local test server.
    session.trust_env = False
    last = {"status": None}

    def remember(response, *args, **kwargs):
        last["status"] = response.status_code

    session.hooks["response"].append(remember)

    for call in spec.get("calls", []):
        last["status"] = None
        method = call.get("method")
        try:
            if method not in METHODS:
                raise ValueError("keen_python.py: unsupported method {!r}".format(method))
            result = getattr(client, method)(*call.get("args", []), **call.get("kwargs", {}))
            line = {"ok": True, "result": result}
        except KeenApiError as e:
            body = e.api_error if isinstance(e.api_error, dict) else None
            line = {"ok": False, "error": str(e), "error_type": type(e).__name__,
                    "error_code": body.get("error_code") if body else None,
                    "status": last["status"], "body": body}
        except Exception as e:  # SDK-side refusals, connection errors
            line = {"ok": False, "error": str(e), "error_type": type(e).__name__,
                    "error_code": None, "status": last["status"]}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
