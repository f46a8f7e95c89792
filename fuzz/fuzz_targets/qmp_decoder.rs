//! The QMP byte stream as the reader task sees it: framing plus message parsing must never
//! panic or allocate without bound, whatever a (compromised) QEMU sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small line bound so the fuzzer also exercises the over-long-line path.
    novacron_qmp::fuzzing::decode_stream(data, 4096);
});
