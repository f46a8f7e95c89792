#!/usr/bin/env python3
"""Serve fakepve (the third-party PVE fake from PyPI, AGPL) for NovaCron's tests and benchmarks.

This process only *uses* fakepve's public API (FakePve, add_vm, add_ct, apitokens, migrate and
its documented `_routes_<area>` extension point); nothing of fakepve is copied here. It exists
because fakepve's own command line cannot register API tokens or pick a free port, and because
fakepve answers POST /nodes/{node}/qemu/{vmid}/migrate from the schema alone (the task ends OK,
the VM stays put): the route below does what PVE's migrate_vm does, so a migrated VM really
lives on its target node afterwards.

Environment: FAKEPVE_PASSWORD, FAKEPVE_TOKEN_ID, FAKEPVE_TOKEN_SECRET (never on the command line).
Arguments: --vms N (qemu guests), --dir D (the self-signed certificate is written to D/fakepve.crt),
--time-scale S (real seconds per PVE second), --ticket-ttl T (login ticket lifetime, s).
Prints one line "fakepve ready port=<port> cert=<path>" once it listens.

The inventory (all names are unique except the "dup" pair):
  vm-000 .. vm-(N-1)  qemu, vmid 100+i; even i on pve1, odd on pve2; every 3rd running
  dup (vmid 9000, 9001)   two qemu guests with the same name
  noacpi (vmid 9002)    running, ignores ACPI: a graceful shutdown times out
  ct-web (vmid 9005)    an lxc container, running
"""

import argparse
import asyncio
import os
import sys

from fakepve import FakePve
from fakepve.certs import make_cert
from fakepve.model import PveError

# PVE seconds a migration takes (fakepve's default for its migrate()).
MIGRATE_SECS = 20


class Pve(FakePve):
    """fakepve with PVE's qemu migrate (PVE::API2::Qemu::migrate_vm's checks, then a task)."""

    def _routes_qemu_migrate(self):
        return [('POST', '/nodes/{node}/qemu/{vmid}/migrate', self._qm_migrate)]

    async def _qm_migrate(self, values, user):
        node, vmid, target = values['node'], int(values['vmid']), values['target']
        if target == node:
            raise PveError(400, 'Parameter verification failed.', {'target': 'target is local node.'})
        if target not in self.nodes:
            raise PveError(500, "no such cluster node '{0}'".format(target))
        vm = self.vm(vmid)
        if vm is None or vm.node != node:
            raise PveError(500, "Configuration file 'nodes/{0}/qemu-server/{1}.conf' does not exist"
                           .format(node, vmid))
        if vm.status == 'running' and not values.get('online'):
            raise PveError(500, "can't migrate running VM without --online")
        return await self.migrate(vmid, target, secs=MIGRATE_SECS, user=user)


async def serve(args):
    pve = Pve(user='root@pam', password=os.environ['FAKEPVE_PASSWORD'], host='127.0.0.1', port=0)
    pve.time_scale = args.time_scale
    # PVE's tickets live 2 h; tests shorten it to see clients log in again.
    pve.ticket_ttl = args.ticket_ttl
    pve.add_node('pve2')
    pve.apitokens[os.environ['FAKEPVE_TOKEN_ID']] = os.environ['FAKEPVE_TOKEN_SECRET']
    config = {'cores': 2, 'memory': 1024, 'smbios1': 'uuid=00000000-0000-4000-8000-{0:012d}'}
    for i in range(args.vms):
        vmid = 100 + i
        cfg = dict(config, smbios1=config['smbios1'].format(vmid))
        pve.add_vm(vmid, 'vm-{0:03d}'.format(i), node='pve1' if i % 2 == 0 else 'pve2',
                   status='running' if i % 3 == 0 else 'stopped', config=cfg)
    pve.add_vm(9000, 'dup', node='pve1', config={'cores': 1, 'memory': 512})
    pve.add_vm(9001, 'dup', node='pve2', config={'cores': 1, 'memory': 512})
    noacpi = pve.add_vm(9002, 'noacpi', node='pve1', status='running', config={'cores': 1, 'memory': 512})
    noacpi.acpi = False
    pve.add_ct(9005, 'ct-web', node='pve1', status='running', config={'cores': 1, 'memory': 256})
    certfile, keyfile, _ = make_cert(args.dir, hosts=('127.0.0.1',))
    await pve.start(certfile, keyfile)
    print('fakepve ready port={0} cert={1}'.format(pve.port, certfile), flush=True)
    await asyncio.Event().wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--vms', type=int, default=10)
    parser.add_argument('--dir', required=True)
    parser.add_argument('--time-scale', type=float, default=0.01)
    parser.add_argument('--ticket-ttl', type=float, default=7200)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
