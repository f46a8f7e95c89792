//! Every XenAPI method the adapter calls, with the arity it calls it with.
//!
//! The client refuses to send a call whose parameter count differs from the one declared
//! here, and the contract test below checks this table against the published model
//! (`tests/peers/xapi/xenapi.json`), so a typo or a wrong arity fails a unit test, not a host.

/// One XenAPI message as the adapter uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Method {
    /// `class.message`, e.g. `VM.start`.
    pub name: &'static str,
    /// Parameters on the wire, the session reference included.
    pub arity: usize,
    /// Whether the first parameter is the session reference.
    pub session: bool,
    /// Called through `Async.<name>` (returns a task reference).
    pub via_task: bool,
}

const fn sync(name: &'static str, arity: usize) -> Method {
    Method {
        name,
        arity,
        session: true,
        via_task: false,
    }
}

const fn task(name: &'static str, arity: usize) -> Method {
    Method {
        name,
        arity,
        session: true,
        via_task: true,
    }
}

pub(crate) const LOGIN: Method = Method {
    name: "session.login_with_password",
    arity: 4,
    session: false,
    via_task: false,
};
pub(crate) const LOGOUT: Method = sync("session.logout", 1);
/// The probe's harmless call: answered `SESSION_INVALID` without credentials.
pub(crate) const POOL_GET_ALL: Method = sync("pool.get_all", 1);
pub(crate) const POOL_GET_MASTER: Method = sync("pool.get_master", 2);

pub(crate) const HOST_GET_SOFTWARE_VERSION: Method = sync("host.get_software_version", 2);
pub(crate) const HOST_GET_API_VERSION_MAJOR: Method = sync("host.get_API_version_major", 2);
pub(crate) const HOST_GET_API_VERSION_MINOR: Method = sync("host.get_API_version_minor", 2);
pub(crate) const HOST_GET_BY_NAME_LABEL: Method = sync("host.get_by_name_label", 2);
pub(crate) const HOST_GET_BY_UUID: Method = sync("host.get_by_uuid", 2);

pub(crate) const VM_GET_ALL_RECORDS: Method = sync("VM.get_all_records", 1);
pub(crate) const VM_GET_RECORD: Method = sync("VM.get_record", 2);
pub(crate) const VM_GET_BY_NAME_LABEL: Method = sync("VM.get_by_name_label", 2);
pub(crate) const VM_GET_BY_UUID: Method = sync("VM.get_by_uuid", 2);
pub(crate) const VM_CREATE: Method = sync("VM.create", 2);
pub(crate) const VM_DESTROY: Method = sync("VM.destroy", 2);
pub(crate) const VM_SET_VCPUS_MAX: Method = sync("VM.set_VCPUs_max", 3);
pub(crate) const VM_SET_VCPUS_AT_STARTUP: Method = sync("VM.set_VCPUs_at_startup", 3);
pub(crate) const VM_SET_MEMORY_LIMITS: Method = sync("VM.set_memory_limits", 6);
pub(crate) const VM_SET_NAME_DESCRIPTION: Method = sync("VM.set_name_description", 3);
pub(crate) const VM_START: Method = task("VM.start", 4);
pub(crate) const VM_CLEAN_SHUTDOWN: Method = task("VM.clean_shutdown", 2);
pub(crate) const VM_HARD_SHUTDOWN: Method = task("VM.hard_shutdown", 2);
pub(crate) const VM_SUSPEND: Method = task("VM.suspend", 2);
pub(crate) const VM_RESUME: Method = task("VM.resume", 4);
pub(crate) const VM_UNPAUSE: Method = task("VM.unpause", 2);
pub(crate) const VM_CLEAN_REBOOT: Method = task("VM.clean_reboot", 2);
pub(crate) const VM_POOL_MIGRATE: Method = task("VM.pool_migrate", 4);

pub(crate) const TASK_GET_STATUS: Method = sync("task.get_status", 2);
pub(crate) const TASK_GET_RESULT: Method = sync("task.get_result", 2);
pub(crate) const TASK_GET_ERROR_INFO: Method = sync("task.get_error_info", 2);
pub(crate) const TASK_CANCEL: Method = sync("task.cancel", 2);
pub(crate) const TASK_DESTROY: Method = sync("task.destroy", 2);

/// Every method above (the contract test's list).
#[cfg(test)]
pub(crate) const ALL: &[Method] = &[
    LOGIN,
    LOGOUT,
    POOL_GET_ALL,
    POOL_GET_MASTER,
    HOST_GET_SOFTWARE_VERSION,
    HOST_GET_API_VERSION_MAJOR,
    HOST_GET_API_VERSION_MINOR,
    HOST_GET_BY_NAME_LABEL,
    HOST_GET_BY_UUID,
    VM_GET_ALL_RECORDS,
    VM_GET_RECORD,
    VM_GET_BY_NAME_LABEL,
    VM_GET_BY_UUID,
    VM_CREATE,
    VM_DESTROY,
    VM_SET_VCPUS_MAX,
    VM_SET_VCPUS_AT_STARTUP,
    VM_SET_MEMORY_LIMITS,
    VM_SET_NAME_DESCRIPTION,
    VM_START,
    VM_CLEAN_SHUTDOWN,
    VM_HARD_SHUTDOWN,
    VM_SUSPEND,
    VM_RESUME,
    VM_UNPAUSE,
    VM_CLEAN_REBOOT,
    VM_POOL_MIGRATE,
    TASK_GET_STATUS,
    TASK_GET_RESULT,
    TASK_GET_ERROR_INFO,
    TASK_CANCEL,
    TASK_DESTROY,
];

#[cfg(test)]
mod contract {
    //! The adapter against the published XenAPI model.

    use super::*;
    use serde_json::Value;

    fn model() -> Vec<Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/peers/xapi/xenapi.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        match serde_json::from_str(&text) {
            Ok(Value::Array(classes)) => classes,
            other => panic!("{path}: expected an array of classes, got {other:?}"),
        }
    }

    fn message<'a>(model: &'a [Value], name: &str) -> Option<&'a Value> {
        let (class, msg) = name.split_once('.')?;
        let class = model.iter().find(|c| c["name"] == class)?;
        class["messages"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == msg)
    }

    #[test]
    fn every_method_exists_in_the_published_model_with_our_arity() {
        let model = model();
        let mut problems = Vec::new();
        for m in ALL {
            let Some(decl) = message(&model, m.name) else {
                problems.push(format!("{}: not in xenapi.json", m.name));
                continue;
            };
            let params = decl["params"].as_array().cloned().unwrap_or_default();
            if params.len() != m.arity {
                problems.push(format!(
                    "{}: we send {} parameters, the model declares {}",
                    m.name,
                    m.arity,
                    params.len()
                ));
            }
            let first_is_session = params.first().is_some_and(|p| p["type"] == "session ref");
            if first_is_session != m.session {
                problems.push(format!(
                    "{}: session parameter mismatch (model: {first_is_session})",
                    m.name
                ));
            }
            // XAPI only offers Async.* for explicit (non-implicit) messages.
            if m.via_task && decl["implicit"] == true {
                problems.push(format!("{}: implicit message called through Async", m.name));
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn the_list_is_complete_and_distinct() {
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a method is listed twice");
        // Guards against the check above passing on an empty list.
        assert!(ALL.len() >= 30);
    }

    #[test]
    fn the_power_states_we_map_are_the_models() {
        let model = model();
        let vm = model.iter().find(|c| c["name"] == "VM").expect("VM class");
        let values: Vec<&str> = vm["enums"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "vm_power_state")
            .and_then(|e| e["values"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(values.len(), 4, "{values:?}");
        for v in values {
            assert!(
                super::super::model::PowerState::parse(v).is_some(),
                "power state {v} is not mapped"
            );
        }
    }

    #[test]
    fn the_faults_we_classify_are_declared_by_the_model() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/peers/xapi/xenapi.json"
        ))
        .expect("model");
        // The generic protocol faults (SESSION_INVALID, HANDLE_INVALID...) are raised by the
        // dispatcher and are not listed per message; the per-message ones must be.
        for code in super::super::error::MESSAGE_FAULTS {
            assert!(
                text.contains(&format!("\"{code}\"")),
                "{code} is not in xenapi.json"
            );
        }
    }
}
