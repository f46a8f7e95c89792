//! Prints the libvirt XML of the quick start's demo guest: the test guest (built once per
//! machine) with the accelerator and CPU model this host can actually boot it with.
//!
//! usage: novacron-demo-guest [NAME]

fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "demo".to_owned());
    println!("{}", novacron_tests::test_guest_domain_xml(&name, "")?);
    Ok(())
}
