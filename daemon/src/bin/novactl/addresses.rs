//! `domifaddr NAME [--source lease|agent]`: the guest's addresses per NIC, as virsh prints
//! them (the lease source names the host link; the agent source the guest's interfaces).

use novacrond::client::Client;
use novacrond::service::nics::addresses::InterfaceAddresses;

use crate::exit::CliError;
use crate::output;

pub async fn run(
    client: &Client,
    json: bool,
    name: &str,
    source: &str,
    timeout: Option<u64>,
) -> Result<(), CliError> {
    let answer = client.interface_addresses(name, source, timeout).await?;
    if json {
        return output::json(&answer);
    }
    output::line(&output::table(
        &["NAME", "MAC ADDRESS", "PROTOCOL", "ADDRESS"],
        &rows(&answer),
    ))
}

fn rows(a: &InterfaceAddresses) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for i in &a.interfaces {
        let name = i.name.clone().unwrap_or_else(|| "-".into());
        let mac = i.mac.clone().unwrap_or_else(|| "-".into());
        if i.addresses.is_empty() {
            rows.push(vec![name.clone(), mac.clone(), "N/A".into(), "N/A".into()]);
        }
        for x in &i.addresses {
            rows.push(vec![
                name.clone(),
                mac.clone(),
                x.family.clone(),
                format!("{}/{}", x.address, x.prefix),
            ]);
        }
    }
    rows
}
