#!/usr/bin/env python3
"""Reference vSphere client for the remote-listing benchmark: pyvmomi (VMware's own Python
SDK) lists every VM's name and runtime.powerState the way the NovaCron adapter does, through
a ContainerView and the PropertyCollector.

Usage: vsphere_list.py URL USER PASSWORD [ROUNDS]
  URL is the endpoint (https://host:port, with or without /sdk); the password may also be
  given as '-' to read it from the VSPHERE_PASSWORD environment variable (keeps it out of
  the process list).

Prints one JSON object: {"count": N, "seconds": S} where S is the median time of ROUNDS
(default 1) listings, login and logout excluded. TLS certificates are not verified (test
peers use self-signed certificates).
"""

import json
import os
import ssl
import statistics
import sys
import time
from urllib.parse import urlparse

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl


def list_vms(content):
    view = content.viewManager.CreateContainerView(
        content.rootFolder, [vim.VirtualMachine], True
    )
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[
                vmodl.query.PropertyCollector.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        vmodl.query.PropertyCollector.TraversalSpec(
                            type=vim.view.ContainerView, path="view", skip=False
                        )
                    ],
                )
            ],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.VirtualMachine, pathSet=["name", "runtime.powerState"]
                )
            ],
        )
        collector = content.propertyCollector
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=1000)
        result = collector.RetrievePropertiesEx([spec], options)
        vms = []
        while result is not None:
            for obj in result.objects:
                props = {p.name: p.val for p in obj.propSet}
                vms.append((props.get("name"), props.get("runtime.powerState")))
            if not result.token:
                break
            result = collector.ContinueRetrievePropertiesEx(result.token)
        return vms
    finally:
        view.DestroyView()


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    url, user, password = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) == 5 else 1
    if password == "-":
        password = os.environ.get("VSPHERE_PASSWORD", "")
    parsed = urlparse(url if "://" in url else "https://" + url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    si = SmartConnect(
        host=parsed.hostname,
        port=parsed.port or 443,
        user=user,
        pwd=password,
        sslContext=context,
    )
    try:
        content = si.RetrieveContent()
        times = []
        count = 0
        for _ in range(max(rounds, 1)):
            start = time.perf_counter()
            count = len(list_vms(content))
            times.append(time.perf_counter() - start)
        print(json.dumps({"count": count, "seconds": statistics.median(times)}))
    finally:
        Disconnect(si)
    return 0


if __name__ == "__main__":
    sys.exit(main())
