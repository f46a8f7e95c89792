//! Which uuid each local domain name has, for log lines: journald's `UUID=` field on events
//! and audit lines, which are logged from places that know only the name. A lock of its own
//! that is never held while taking another, so a line can be logged under any other lock.
//! Names stay after their domain is gone (the last lines about it still carry its uuid);
//! a new domain of the same name replaces the entry.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use novacron_domain::model::Uuid;

#[derive(Default)]
pub struct DomainUuids(Mutex<HashMap<String, String>>);

impl DomainUuids {
    pub fn remember(&self, name: &str, uuid: Option<Uuid>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match uuid {
            Some(uuid) => {
                map.insert(name.to_owned(), uuid.to_string());
            }
            None => {
                map.remove(name);
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_replaced_and_forgotten() {
        let uuids = DomainUuids::default();
        let a = Uuid([1; 16]);
        let b = Uuid([2; 16]);
        assert_eq!(uuids.get("web1"), None);
        uuids.remember("web1", Some(a));
        assert_eq!(uuids.get("web1"), Some(a.to_string()));
        uuids.remember("web1", Some(b));
        assert_eq!(uuids.get("web1"), Some(b.to_string()));
        uuids.remember("web1", None);
        assert_eq!(uuids.get("web1"), None);
    }
}
