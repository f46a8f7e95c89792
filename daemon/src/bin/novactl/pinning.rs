//! `vcpupin`, `emulatorpin`, `iothreadpin`: show or change where a domain's threads run,
//! as virsh does (a cpulist changes one thread; without one the pins are shown).

use novacrond::client::{Client, PinTarget, Pinning, ThreadAffinity};

use crate::cli::PinScopeArg;
use crate::exit::CliError;
use crate::output;

/// Which command, and the thread it names (if any).
#[derive(Debug, Clone, Copy)]
pub enum Which {
    Vcpu(Option<u32>),
    Emulator,
    Iothread(Option<u32>),
}

pub async fn run(
    client: &Client,
    json: bool,
    name: &str,
    which: Which,
    cpulist: Option<&str>,
    scope: PinScopeArg,
) -> Result<(), CliError> {
    let target = match which {
        Which::Vcpu(n) => n.map(PinTarget::Vcpu),
        Which::Iothread(n) => n.map(PinTarget::Iothread),
        Which::Emulator => Some(PinTarget::Emulator),
    };
    let pinning = match (target, cpulist) {
        (Some(target), Some(cpus)) => {
            client
                .pin(name, target, cpus, scope.live, scope.config)
                .await?
        }
        // Showing: --config shows the definition, otherwise what runs now.
        _ => client.pinning(name, scope.config).await?,
    };
    if json {
        return output::json(&pinning);
    }
    output::line(&render(&pinning, which))
}

/// The rows of the command's thread kind (only the named thread, when one is named).
fn render(p: &Pinning, which: Which) -> String {
    let rows = |list: &[ThreadAffinity], only: Option<u32>| -> Vec<Vec<String>> {
        list.iter()
            .filter(|t| only.is_none() || t.id == only)
            .map(|t| row(t, t.id.map(|i| i.to_string()).unwrap_or_default()))
            .collect()
    };
    match which {
        Which::Vcpu(only) => output::table(
            &["VCPU", "THREAD", "CPU AFFINITY", "PINNED"],
            &rows(&p.vcpus, only),
        ),
        Which::Iothread(only) => output::table(
            &["IOTHREAD", "THREAD", "CPU AFFINITY", "PINNED"],
            &rows(&p.iothreads, only),
        ),
        Which::Emulator => output::table(
            &["EMULATOR", "THREADS", "CPU AFFINITY", "PINNED"],
            &[row(&p.emulator, "*".into())],
        ),
    }
}

fn row(t: &ThreadAffinity, id: String) -> Vec<String> {
    let threads = t
        .thread_ids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    vec![
        id,
        if threads.is_empty() {
            "-".into()
        } else {
            threads
        },
        t.affinity.clone(),
        t.pinned.clone().unwrap_or_else(|| "-".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_named_vcpu_only() {
        let t = |id, cpus: &str| ThreadAffinity {
            id: Some(id),
            thread_ids: vec![100 + id],
            affinity: cpus.into(),
            pinned: None,
        };
        let p = Pinning {
            source: "live".into(),
            vcpus: vec![t(0, "0-1"), t(1, "1")],
            emulator: ThreadAffinity {
                id: None,
                thread_ids: vec![7, 8],
                affinity: "0".into(),
                pinned: Some("0".into()),
            },
            iothreads: Vec::new(),
        };
        let text = render(&p, Which::Vcpu(Some(1)));
        assert_eq!(
            text,
            "VCPU  THREAD  CPU AFFINITY  PINNED\n1     101     1             -"
        );
        assert!(render(&p, Which::Emulator).contains("*         7,8      0             0"));
    }
}
