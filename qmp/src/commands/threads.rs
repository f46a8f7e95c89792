//! Where QEMU's threads are: the input to vCPU and iothread pinning.

use serde::Deserialize;

use super::no_arg_command;

no_arg_command!(
    /// `query-cpus-fast`: vCPU thread ids without interrupting the vCPUs.
    QueryCpusFast = "query-cpus-fast" -> Vec<CpuInfoFast>
);
no_arg_command!(
    /// `query-iothreads`
    QueryIothreads = "query-iothreads" -> Vec<IothreadInfo>
);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CpuInfoFast {
    pub cpu_index: u32,
    pub qom_path: String,
    pub thread_id: i64,
    #[serde(default)]
    pub props: Option<CpuInstanceProperties>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CpuInstanceProperties {
    pub node_id: Option<u32>,
    pub socket_id: Option<u32>,
    pub die_id: Option<u32>,
    pub core_id: Option<u32>,
    pub thread_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct IothreadInfo {
    pub id: String,
    pub thread_id: i64,
}
