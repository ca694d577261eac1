"""The independent SCRAM side of shared/tests/scram_crosscheck.rs, using PyPI `scramp`.

    scram_crosscheck.py verifiers
        stdin:  a JSON list of {"mechanism", "password", "salt" (base64), "iterations"}
        stdout: a JSON list of {"stored_key", "server_key"} (base64), in the same order

    scram_crosscheck.py client MECHANISM USERNAME PASSWORD
        a SCRAM client speaking one message per line: prints the client-first-message, reads
        the server-first-message, prints the client-final-message, reads the
        server-final-message, then prints "ok" if scramp accepts the server's signature, or
        "refused: <reason>" if it does not (including an `e=` error from the server).

    scram_crosscheck.py exchange MECHANISM SALT ITERATIONS STORED_KEY SERVER_KEY
        stdin:  the password, on one line (kept off argv, where `ps` would show it)
        a full scramp ScramClient <-> scramp ScramServer exchange, the server configured with
        the given verifier (salt, stored and server key in base64), as a server holding only
        what the Keys table holds would be; prints "ok" if both sides accept, or
        "refused: <reason>".
"""

import base64
import json
import sys

from scramp import ScramClient, ScramException, ScramMechanism


def verifiers():
    out = []
    for case in json.load(sys.stdin):
        _, stored_key, server_key, _ = ScramMechanism(case["mechanism"]).make_auth_info(
            case["password"],
            iteration_count=case["iterations"],
            salt=base64.b64decode(case["salt"]),
        )
        out.append({
            "stored_key": base64.b64encode(stored_key).decode(),
            "server_key": base64.b64encode(server_key).decode(),
        })
    print(json.dumps(out), flush=True)


def client(mechanism, username, password):
    scram = ScramClient([mechanism], username, password)
    print(scram.get_client_first(), flush=True)
    scram.set_server_first(sys.stdin.readline().rstrip("\n"))
    print(scram.get_client_final(), flush=True)
    try:
        scram.set_server_final(sys.stdin.readline().rstrip("\n"))
    except ScramException as error:
        print(f"refused: {error}", flush=True)
        return
    print("ok", flush=True)


def exchange(mechanism, salt, iterations, stored_key, server_key):
    password = sys.stdin.readline().rstrip("\n")
    auth_info = (
        base64.b64decode(salt),
        base64.b64decode(stored_key),
        base64.b64decode(server_key),
        int(iterations),
    )
    server = ScramMechanism(mechanism).make_server(lambda _username: auth_info)
    client = ScramClient([mechanism], "project", password)
    try:
        server.set_client_first(client.get_client_first())
        client.set_server_first(server.get_server_first())
        server.set_client_final(client.get_client_final())
        client.set_server_final(server.get_server_final())
    except ScramException as error:
        print(f"refused: {error}", flush=True)
        return
    print("ok", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["verifiers"]:
        verifiers()
    elif sys.argv[1:2] == ["client"] and len(sys.argv) == 5:
        client(*sys.argv[2:])
    elif sys.argv[1:2] == ["exchange"] and len(sys.argv) == 7:
        exchange(*sys.argv[2:])
    else:
        sys.exit(__doc__)
