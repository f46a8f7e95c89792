#!/usr/bin/env python3
"""Reference Proxmox VE client for the remote-listing benchmark: proxmoxer (the common Python
client of the PVE API) lists every guest's name and status from /cluster/resources?type=vm, the
call the NovaCron adapter makes.

Usage: proxmox_list.py URL TOKEN_ID TOKEN_SECRET [ROUNDS] [CA_FILE]
  URL is the endpoint (https://host:port, with or without /api2/json); TOKEN_ID is
  USER@REALM!TOKENNAME (what tests/src/peers/fakepve.rs hands out); TOKEN_SECRET may be given as
  '-' to read it from the PVE_TOKEN_SECRET environment variable (keeps it out of the process
  list). CA_FILE verifies TLS against that certificate; without it TLS is not verified (test
  peers use self-signed certificates).

Prints one JSON object: {"count": N, "seconds": S} where S is the median time of ROUNDS
(default 1) listings; building the client is excluded (token auth has no login).
"""

import json
import os
import statistics
import sys
import time
from urllib.parse import urlparse

from proxmoxer import ProxmoxAPI


def list_guests(api):
    rows = api.cluster.resources.get(type="vm")
    return [(row.get("name"), row.get("status")) for row in rows]


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    url, token_id, secret = argv[1], argv[2], argv[3]
    rounds = int(argv[4]) if len(argv) > 4 else 1
    ca_file = argv[5] if len(argv) > 5 else None
    if secret == "-":
        secret = os.environ["PVE_TOKEN_SECRET"]
    user, sep, token_name = token_id.partition("!")
    if not sep:
        print("TOKEN_ID must be USER@REALM!TOKENNAME", file=sys.stderr)
        return 2
    parsed = urlparse(url)
    api = ProxmoxAPI(
        parsed.hostname,
        port=parsed.port or 8006,
        user=user,
        token_name=token_name,
        token_value=secret,
        verify_ssl=ca_file if ca_file else False,
        service="PVE",
    )
    times = []
    count = 0
    for _ in range(max(rounds, 1)):
        start = time.perf_counter()
        guests = list_guests(api)
        times.append(time.perf_counter() - start)
        count = len(guests)
    print(json.dumps({"count": count, "seconds": statistics.median(times)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
