#!/usr/bin/python3
"""virt-install against libvirt's embedded QEMU driver (qemu:///embed?root=DIR), which needs no
libvirtd and writes the domain XML a real host gets. Two shims, nothing else changed:
- virt-install 4.1 registers no libvirt event loop, which the embedded driver requires;
- the embedded driver has no storage driver, and virt-install 4.1 then drops every disk path
  (diskbackend.manage_path returns None for it); keep the path as given instead.
"""
import os
import sys

import libvirt

libvirt.virEventRegisterDefaultImpl()
sys.path.insert(0, "/usr/share/virt-manager")
from virtinst import diskbackend, virtinstall  # noqa: E402

_manage_path = diskbackend.manage_path


def manage_path(conn, path):
    if path and not conn.support.conn_storage():
        return os.path.abspath(path), None, None
    return _manage_path(conn, path)


diskbackend.manage_path = manage_path
virtinstall.runcli()
