//! `set-metadata`: title, description and tags of a domain. The demonstration of what adding
//! an operation takes: this file, a row in `table.rs`, and one entry per face table.

use novacron_domain::Error;

use super::{table, OpInfo, Operation};
use crate::service::metadata::{Metadata, MetadataChange};
use crate::service::Service;

#[derive(Debug, Clone)]
pub struct SetMetadata {
    pub domain: String,
    pub change: MetadataChange,
}

impl Operation for SetMetadata {
    type Response = Metadata;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::SET_METADATA
    }

    fn target(&self) -> &str {
        &self.domain
    }

    async fn local(self, svc: Service) -> Result<Metadata, Error> {
        svc.set_metadata(&self.domain, self.change).await
    }
}
