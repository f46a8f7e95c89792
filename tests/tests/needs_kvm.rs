//! Tests that need the Linux test guest under KVM. Where KVM cannot boot it (no usable
//! /dev/kvm, or a nested software KVM that runs SeaBIOS but not Linux), the rest of the suite
//! falls back to TCG and still means what it says; these cannot, so they are reported as
//! ignored, reason "skipped: needs KVM", in cargo's own closing counts (`N ignored`) that CI
//! reads, never as passed. libtest decides `#[ignore]` at compile time; this target has its
//! own harness (libtest-mimic, same output and arguments) so the decision is made when the
//! tests run. `NOVACRON_TEST_ACCEL=kvm` forces the attempt (and a failure where KVM cannot
//! boot the guest).

use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use novacron_tests::{os_guest_choice, Accel, QemuBuilder, READY_MARKER};

fn main() {
    let args = Arguments::from_args();
    let trials = vec![Trial::ignorable_test(
        "the_linux_test_guest_runs_under_kvm",
        || needs_kvm(the_linux_test_guest_runs_under_kvm),
    )];
    libtest_mimic::run(&args, trials).exit();
}

/// Runs `test` if the Linux test guest boots under KVM here, else reports it ignored.
fn needs_kvm(test: fn() -> Result<(), Failed>) -> Result<Completion, Failed> {
    let choice = os_guest_choice().map_err(|e| format!("{e:#}"))?;
    if choice.accel != Accel::Kvm {
        return Ok(Completion::ignored_with(format!(
            "skipped: needs KVM (the Linux test guest runs under {choice} on this host)"
        )));
    }
    test().map(|()| Completion::Completed)
}

/// The accelerator the test bed chose for the Linux guest is the one QEMU runs it with: the
/// guest reaches its ready line and QEMU's `query-kvm` says KVM is present and in use.
fn the_linux_test_guest_runs_under_kvm() -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut qemu = QemuBuilder::test_guest()
            .spawn()
            .map_err(|e| format!("{e:#}"))?;
        qemu.wait_serial_async(READY_MARKER, Duration::from_secs(60))
            .await
            .map_err(|e| format!("{e:#}\n{}", qemu.diagnostics()))?;
        let qmp = novacron_qmp::Client::connect(qemu.qmp_socket())
            .await
            .map_err(|e| format!("QMP: {e}"))?;
        let kvm = qmp
            .execute_raw("query-kvm", None)
            .await
            .map_err(|e| format!("query-kvm: {e}"))?;
        if kvm != serde_json::json!({"enabled": true, "present": true}) {
            return Err(format!(
                "QEMU reports {kvm} for the guest started with {}",
                qemu.accel()
            )
            .into());
        }
        qemu.kill();
        Ok(())
    })
}
