//! Remote-hypervisor test peers, started by the tests and benchmarks themselves.
//!
//! - [`vcsim`]: the vSphere simulator from govmomi (real vendor simulator), built once per
//!   machine from Debian's govmomi sources and cached.
//! - [`fakepve`]: the third-party Proxmox VE fake from PyPI, run as an outside process.
//! - [`xapi`]: a XAPI JSON-RPC/XML-RPC test peer built in this tree from the published API
//!   (`shared/vendor-api/xenapi.json`); not a real XenServer.
//! - [`winrm`]: a WinRM test peer built in this tree (NTLM via pyspnego, message encryption,
//!   the Hyper-V cmdlets' documented output); not a real Hyper-V.
//!
//! Each peer is a child process killed on drop.

pub mod fakepve;
pub mod vcsim;
pub mod winrm;
pub mod xapi;
