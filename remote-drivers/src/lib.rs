//! Remote vendor hypervisor adapters (vSphere, Proxmox VE, XenServer/XCP-ng, Hyper-V), each
//! implementing `novacron_domain::Driver`. Empty until the remote-drivers issue.
