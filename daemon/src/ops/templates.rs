//! Domain templates (`template-create`, `template-update`, `template-delete`,
//! `template-deploy`): each change one operation, audited under the template's name (a deploy
//! under the new domain's). Listing and reading are queries the faces answer from the service.

use novacron_domain::Error;

use super::{table, OpInfo, Operation};
use crate::service::templates::{
    check_name, CreateRequest, DeployRequest, Deployed, TemplateView, UpdateRequest,
};
use crate::service::Service;

pub struct TemplateCreate {
    pub request: CreateRequest,
}

impl Operation for TemplateCreate {
    type Response = TemplateView;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::TEMPLATE_CREATE
    }
    fn target(&self) -> &str {
        &self.request.name
    }
    fn check(&self) -> Result<(), Error> {
        check_name("name", &self.request.name)
    }
    async fn local(self, svc: Service) -> Result<TemplateView, Error> {
        svc.template_create(self.request).await
    }
}

pub struct TemplateUpdate {
    pub template: String,
    pub request: UpdateRequest,
}

impl Operation for TemplateUpdate {
    type Response = TemplateView;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::TEMPLATE_UPDATE
    }
    fn target(&self) -> &str {
        &self.template
    }
    fn check(&self) -> Result<(), Error> {
        check_name("template", &self.template)
    }
    async fn local(self, svc: Service) -> Result<TemplateView, Error> {
        svc.template_update(&self.template, self.request).await
    }
}

/// One version (`Some`) or the whole template.
pub struct TemplateDelete {
    pub template: String,
    pub version: Option<u32>,
}

impl Operation for TemplateDelete {
    type Response = ();
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::TEMPLATE_DELETE
    }
    fn target(&self) -> &str {
        &self.template
    }
    fn check(&self) -> Result<(), Error> {
        check_name("template", &self.template)
    }
    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.template_delete(&self.template, self.version).await
    }
}

pub struct TemplateDeploy {
    pub template: String,
    pub request: DeployRequest,
}

impl Operation for TemplateDeploy {
    type Response = Deployed;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::TEMPLATE_DEPLOY
    }
    /// The domain it makes: its audit trail starts here.
    fn target(&self) -> &str {
        &self.request.name
    }
    fn check(&self) -> Result<(), Error> {
        check_name("template", &self.template)
    }
    async fn local(self, svc: Service) -> Result<Deployed, Error> {
        svc.template_deploy(&self.template, self.request).await
    }
}
