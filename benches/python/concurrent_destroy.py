#!/usr/bin/env python3
"""N concurrent destroys through the HTTP API of a real novacrond: when does each call return?

Starts novacrond (the binary given) on a private state, defines and starts N OS-less guests,
then sends N `POST /v1/domains/{name}/destroy` at once (one thread and connection each) and
prints each return time relative to the first call, beside when each guest's QEMU was seen gone
(/proc polled). Calls that return as their own guest goes spread out; a serialisation shows as
all of them returning together at the end.

  cargo build --release -p novacrond
  sudo python3 benches/python/concurrent_destroy.py target/release/novacrond 100 [scopes-mode]

NCD_BASE=/dev/shm puts the state on tmpfs (rules out fsync); NCD_KEEP_LOG=<file> keeps the
daemon's log (its state-change lines show when each guest's end was recorded).
"""
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

binary = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
scopes = sys.argv[3] if len(sys.argv) > 3 else "auto"
kvm = os.path.exists("/dev/kvm")


class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(sock, method, path, body=None, ctype="application/json"):
    c = Unix(sock)
    c.request(method, path, body=body, headers={"Content-Type": ctype} if body else {})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
    return data


def exited(pid):
    """The whole process is gone: a leader in state Z whose other threads still run (a QEMU
    tearing down its VM) has not exited yet, and its parent is not told."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        return state == "Z" and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except (FileNotFoundError, ProcessLookupError):
        return True


def main():
    tmp = tempfile.mkdtemp(prefix="ncdestroy-", dir=os.environ.get("NCD_BASE", "/tmp"))
    os.chmod(tmp, 0o711)  # the unprivileged QEMU user must reach its sockets
    run = os.path.join(tmp, "r")
    cfg = os.path.join(tmp, "novacrond.toml")
    with open(cfg, "w") as f:
        f.write(f'state_dir = "{tmp}/state"\nrun_dir = "{run}"\nlog_dir = "{tmp}/log"\n'
                f'job_wait_secs = 60\n[dbus]\nbus = "none"\n[scopes]\nmode = "{scopes}"\n')
    log = open(os.path.join(tmp, "daemon.log"), "w")
    daemon = subprocess.Popen([binary, "--config", cfg], stdout=log, stderr=log)
    sock = os.path.join(run, "novacrond.sock")
    pids = {}
    try:
        deadline = time.time() + 30
        while not os.path.exists(sock):
            if time.time() > deadline or daemon.poll() is not None:
                sys.exit("daemon did not come up:\n" + open(os.path.join(tmp, "daemon.log")).read())
            time.sleep(0.05)
        names = [f"d{i:03}" for i in range(n)]
        virt = "kvm" if kvm else "qemu"
        for name in names:
            xml = (f"<domain type='{virt}'><name>{name}</name><memory unit='MiB'>64</memory>"
                   "<vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os>"
                   "<features><acpi/></features></domain>")
            call(sock, "POST", "/v1/domains", xml, "application/xml")
            call(sock, "POST", f"/v1/domains/{name}/start")
        for name in names:
            rec = json.load(open(os.path.join(run, "domains", f"{name}.json")))
            pids[name] = rec["pid"]
        time.sleep(1)  # let the guests settle (SeaBIOS spinning with no disk)
        if os.environ.get("NCD_NICE"):  # the daemon's threads only, not its QEMUs
            for tid in os.listdir(f"/proc/{daemon.pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(tid), int(os.environ["NCD_NICE"]))
        gone = {}
        done = {}
        go = threading.Barrier(n + 1)

        def destroy(name):
            go.wait()
            call(sock, "POST", f"/v1/domains/{name}/destroy")
            done[name] = time.monotonic()

        def watch():
            left = dict(pids)
            while left:
                for name, pid in list(left.items()):
                    if exited(pid):
                        gone[name] = time.monotonic()
                        del left[name]
                time.sleep(0.002)

        threads = [threading.Thread(target=destroy, args=(m,)) for m in names]
        for t in threads:
            t.start()
        watcher = threading.Thread(target=watch)
        go.wait()
        t0 = time.monotonic()
        watcher.start()
        for t in threads:
            t.join()
        watcher.join()
        ret = sorted(v - t0 for v in done.values())
        gon = sorted(v - t0 for v in gone.values())
        lag = sorted(done[m] - gone[m] for m in names)
        fmt = lambda xs: f"first {xs[0]:.3f}  median {statistics.median(xs):.3f}  last {xs[-1]:.3f}"
        print(f"{n} concurrent destroys via HTTP ({'KVM' if kvm else 'TCG'}, scopes={scopes}), seconds after the first call:")
        print(f"  call returned:   {fmt(ret)}")
        print(f"  QEMU gone:       {fmt(gon)}")
        print(f"  return - gone:   {fmt(lag)}")
        log.flush()
        text = open(os.path.join(tmp, "daemon.log")).read()
        print(f"  SIGKILL after the {3} s grace: {text.count('QEMU ignored SIGTERM')} guests")
    finally:
        daemon.terminate()
        daemon.wait()
        for pid in pids.values():  # guests left over by a failed run (pids may be gone by now)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if os.environ.get("NCD_KEEP_LOG"):
            shutil.copy(os.path.join(tmp, "daemon.log"), os.environ["NCD_KEEP_LOG"])
        shutil.rmtree(tmp, ignore_errors=True)


main()
