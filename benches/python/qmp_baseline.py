#!/usr/bin/env python3
"""The reference QMP client for benches/qmp_roundtrip: a plain socket and json, nothing else.

usage: qmp_baseline.py SOCKET CALLS THREADS
Runs CALLS query-status round trips split over THREADS threads sharing one connection (a lock
around each request/reply, as a minimal client without id matching must), and prints one JSON
object: {"latencies_ns": [...], "elapsed_ns": N}.
"""
import json
import socket
import sys
import threading
import time


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb", buffering=0)
        self.reader = self.sock.makefile("rb")
        self.lock = threading.Lock()
        json.loads(self.reader.readline())  # greeting
        self.call("qmp_capabilities")

    def call(self, name):
        with self.lock:
            self.sock.sendall(json.dumps({"execute": name}).encode() + b"\n")
            while True:
                msg = json.loads(self.reader.readline())
                if "event" not in msg:
                    return msg


def main():
    path, calls, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    qmp = Qmp(path)
    per_thread = calls // threads
    latencies = [[] for _ in range(threads)]

    def worker(out):
        for _ in range(per_thread):
            t = time.perf_counter_ns()
            reply = qmp.call("query-status")
            out.append(time.perf_counter_ns() - t)
            assert "return" in reply, reply

    workers = [threading.Thread(target=worker, args=(latencies[i],)) for i in range(threads)]
    start = time.perf_counter_ns()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter_ns() - start
    print(json.dumps({"latencies_ns": [x for l in latencies for x in l], "elapsed_ns": elapsed}))


if __name__ == "__main__":
    main()
