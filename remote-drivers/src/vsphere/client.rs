//! The vim25 session: one HTTP client, the ServiceContent, a lazy login kept in the cookie
//! jar (`vmware_soap_session`), one re-login when the server says the session is gone, the
//! PropertyCollector with paging, and task polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::VsphereError;
use super::soap::{self, Answer, Fault, MoRef, Request};
use super::xml::{escape, Node};
use crate::config::{Credentials, HostConfig, Secret};
use crate::http::{self, TransportError};

/// Objects per PropertyCollector page we ask for (the server may send fewer).
const PAGE_OBJECTS: u32 = 1000;
/// Task polling: first pause and ceiling (doubling in between).
const TASK_POLL_FIRST: Duration = Duration::from_millis(20);
const TASK_POLL_MAX: Duration = Duration::from_millis(1000);

/// The parts of `ServiceContent` this adapter uses.
#[derive(Debug, Clone)]
pub struct ServiceContent {
    pub root_folder: MoRef,
    pub property_collector: MoRef,
    pub view_manager: MoRef,
    pub session_manager: MoRef,
    pub about: About,
}

#[derive(Debug, Clone, Default)]
pub struct About {
    pub name: String,
    pub full_name: String,
    pub version: String,
    pub build: String,
    pub api_type: String,
    pub api_version: String,
    pub instance_uuid: String,
}

impl ServiceContent {
    fn from_response(node: &Node) -> Result<Self, VsphereError> {
        const M: &str = "RetrieveServiceContent";
        let rv = node
            .child("returnval")
            .ok_or_else(|| VsphereError::protocol(M, "no returnval"))?;
        let moref = |name: &str| {
            rv.child(name)
                .and_then(MoRef::from_node)
                .ok_or_else(|| VsphereError::protocol(M, format!("no {name}")))
        };
        let about = rv
            .child("about")
            .ok_or_else(|| VsphereError::protocol(M, "no about"))?;
        let text = |name: &str| about.child_text(name).unwrap_or("").to_owned();
        Ok(Self {
            root_folder: moref("rootFolder")?,
            property_collector: moref("propertyCollector")?,
            view_manager: moref("viewManager")?,
            session_manager: moref("sessionManager")?,
            about: About {
                name: text("name"),
                full_name: text("fullName"),
                version: text("version"),
                build: text("build"),
                api_type: text("apiType"),
                api_version: text("apiVersion"),
                instance_uuid: text("instanceUuid"),
            },
        })
    }
}

fn service_instance() -> MoRef {
    MoRef::new("ServiceInstance", "ServiceInstance")
}

/// `<base>/sdk`, whether or not the configured URL already ends in `/sdk`.
pub fn sdk_url(base: &url::Url) -> url::Url {
    let mut u = base.clone();
    u.set_query(None);
    u.set_fragment(None);
    let path = u.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/sdk") {
        u.set_path(&format!("{path}/sdk"));
    }
    u
}

/// Posts one request and reads its answer (bounded), without any session handling.
pub async fn post(
    client: &reqwest::Client,
    sdk: &url::Url,
    request: &Request,
    timeout: Duration,
) -> Result<Answer, VsphereError> {
    let method = request.method();
    let response = client
        .post(sdk.clone())
        .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .header("SOAPAction", soap::SOAP_ACTION)
        .body(request.finish())
        .send()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;
    let status = response.status();
    let body = http::read_bounded(response, http::MAX_BODY, timeout).await?;
    // vim answers faults with 500; anything else that is not 200 is not vim speaking.
    if status != reqwest::StatusCode::OK && status != reqwest::StatusCode::INTERNAL_SERVER_ERROR {
        return Err(TransportError::Status {
            status: status.as_u16(),
            body: http::excerpt(&body),
        }
        .into());
    }
    let parsed = http::parse_off_runtime(body, soap::parse_answer)
        .await
        .map_err(|e| VsphereError::protocol(method, e.to_string()))?;
    parsed.map_err(|e| VsphereError::from_parse(method, e))
}

/// One logged-in session. Replaced as a whole when the server forgets it.
pub struct Session {
    pub content: ServiceContent,
    generation: u64,
    /// The ContainerView over every VM, created on first use and reused by every listing
    /// (views live as long as their session).
    vm_view: Mutex<Option<MoRef>>,
    /// Serialises the view's creation, so concurrent first listings create one view.
    vm_view_gate: tokio::sync::Mutex<()>,
}

/// The properties of one object from the PropertyCollector.
#[derive(Debug, Clone)]
pub struct ObjectContent {
    pub obj: MoRef,
    pub props: HashMap<String, Node>,
}

impl ObjectContent {
    pub fn text(&self, path: &str) -> Option<&str> {
        self.props.get(path).map(|v| v.text.trim())
    }
}

pub struct Client {
    http: reqwest::Client,
    sdk: url::Url,
    host: String,
    user: String,
    password: Option<Secret>,
    request_timeout: Duration,
    session: Mutex<Option<Arc<Session>>>,
    login: tokio::sync::Mutex<()>,
    generation: std::sync::atomic::AtomicU64,
}

impl Client {
    pub fn new(config: &HostConfig) -> Result<Self, VsphereError> {
        let (user, password) = match &config.credentials {
            Credentials::Password { user, password } => (user.clone(), Some(password.clone())),
            // vSphere has no API tokens; refused at login with a clear message.
            Credentials::Token { id, .. } => (id.clone(), None),
        };
        Ok(Self {
            http: http::client(config)?,
            sdk: sdk_url(&config.url),
            host: config.name.clone(),
            user,
            password,
            request_timeout: config.timeouts.request,
            session: Mutex::new(None),
            login: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The session, logging in first if there is none. Concurrent callers share one login.
    pub async fn session(&self) -> Result<Arc<Session>, VsphereError> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let _one_login = self.login.lock().await;
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let content = self.service_content().await?;
        let Some(password) = &self.password else {
            return Err(VsphereError::Fault(Fault {
                name: "InvalidLogin".into(),
                message: "vSphere needs a user and password; token credentials are not supported"
                    .into(),
                fields: Vec::new(),
            }));
        };
        let mut login = Request::new("Login", &content.session_manager);
        login
            .text("userName", &self.user)
            .text("password", password.expose());
        match post(&self.http, &self.sdk, &login, self.request_timeout).await? {
            Answer::Response(_) => {}
            Answer::Fault(f) => return Err(VsphereError::Fault(f)),
        }
        tracing::debug!(host = %self.host, user = %self.user, "vSphere login");
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = Arc::new(Session {
            content,
            generation,
            vm_view: Mutex::new(None),
            vm_view_gate: tokio::sync::Mutex::new(()),
        });
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
        Ok(session)
    }

    /// ServiceContent without logging in (also what `probe` asks).
    pub async fn service_content(&self) -> Result<ServiceContent, VsphereError> {
        let request = Request::new("RetrieveServiceContent", &service_instance());
        match post(&self.http, &self.sdk, &request, self.request_timeout).await? {
            Answer::Response(node) => ServiceContent::from_response(&node),
            Answer::Fault(f) => Err(VsphereError::Fault(f)),
        }
    }

    fn forget(&self, session: &Session) {
        let mut slot = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if slot
            .as_ref()
            .is_some_and(|s| s.generation == session.generation)
        {
            *slot = None;
        }
    }

    /// Calls a method built from the session's ServiceContent; logs in again once if the
    /// server says the session is not (or no longer) authenticated.
    pub async fn call(
        &self,
        build: impl Fn(&ServiceContent) -> Request,
    ) -> Result<Node, VsphereError> {
        let mut relogged = false;
        loop {
            let session = self.session().await?;
            let request = build(&session.content);
            match post(&self.http, &self.sdk, &request, self.request_timeout).await? {
                Answer::Response(node) => return Ok(node),
                Answer::Fault(f) if f.name == "NotAuthenticated" && !relogged => {
                    tracing::info!(host = %self.host, "vSphere session expired; logging in again");
                    self.forget(&session);
                    relogged = true;
                }
                Answer::Fault(f) => return Err(VsphereError::Fault(f)),
            }
        }
    }

    /// Ends the session (best effort for callers that are done with the host).
    pub async fn logout(&self) -> Result<(), VsphereError> {
        let Some(session) = self.current() else {
            return Ok(());
        };
        self.forget(&session);
        let request = Request::new("Logout", &session.content.session_manager);
        match post(&self.http, &self.sdk, &request, self.request_timeout).await? {
            Answer::Response(_) => Ok(()),
            Answer::Fault(f) => Err(VsphereError::Fault(f)),
        }
    }

    /// A ContainerView over `container` holding objects of `kind`, recursively.
    pub async fn create_view(&self, container: &MoRef, kind: &str) -> Result<MoRef, VsphereError> {
        let node = self
            .call(|sc| {
                let mut r = Request::new("CreateContainerView", &sc.view_manager);
                r.moref("container", container)
                    .text("type", kind)
                    .text("recursive", "true");
                r
            })
            .await?;
        node.child("returnval")
            .and_then(MoRef::from_node)
            .ok_or_else(|| VsphereError::protocol("CreateContainerView", "no view in the answer"))
    }

    pub async fn destroy_view(&self, view: &MoRef) {
        if let Err(e) = self.call(|_| Request::new("DestroyView", view)).await {
            tracing::debug!(host = %self.host, error = %e, "DestroyView");
        }
    }

    /// The session's VM view (created once per session).
    pub async fn vm_view(&self) -> Result<MoRef, VsphereError> {
        let session = self.session().await?;
        if let Some(view) = lock(&session.vm_view).clone() {
            return Ok(view);
        }
        let _one_creation = session.vm_view_gate.lock().await;
        if let Some(view) = lock(&session.vm_view).clone() {
            return Ok(view);
        }
        let view = self
            .create_view(&session.content.root_folder, "VirtualMachine")
            .await?;
        // Kept by the session that asked for it: if a re-login happened meanwhile, the new
        // session makes its own (a view lives and dies with its session).
        *lock(&session.vm_view) = Some(view.clone());
        Ok(view)
    }

    /// Forgets the cached VM view (the server no longer knows it).
    pub fn drop_vm_view(&self) {
        if let Some(current) = self.current() {
            *lock(&current.vm_view) = None;
        }
    }

    /// `paths` of every `kind` object in `view`, all pages.
    pub async fn retrieve_view(
        &self,
        view: &MoRef,
        kind: &str,
        paths: &[&str],
    ) -> Result<Vec<ObjectContent>, VsphereError> {
        let object_set = format!(
            "<objectSet><obj type=\"{}\">{}</obj><skip>true</skip>\
             <selectSet xsi:type=\"TraversalSpec\"><type>ContainerView</type><path>view</path>\
             <skip>false</skip></selectSet></objectSet>",
            escape(&view.kind),
            escape(&view.value)
        );
        self.retrieve(kind, paths, &object_set).await
    }

    /// `paths` of the given objects (all of one `kind`), all pages.
    pub async fn retrieve_objects(
        &self,
        objs: &[MoRef],
        kind: &str,
        paths: &[&str],
    ) -> Result<Vec<ObjectContent>, VsphereError> {
        let mut object_set = String::new();
        for o in objs {
            object_set.push_str(&format!(
                "<objectSet><obj type=\"{}\">{}</obj><skip>false</skip></objectSet>",
                escape(&o.kind),
                escape(&o.value)
            ));
        }
        match self.retrieve(kind, paths, &object_set).await {
            // The session was dropped (forgotten in `retrieve`): once more on a new one.
            Err(e) if e.fault_name() == Some("NotAuthenticated") => {
                self.retrieve(kind, paths, &object_set).await
            }
            other => other,
        }
    }

    /// All pages of one PropertyCollector query. A property the server withholds for want
    /// of a session (vcsim, and vCenter for some objects, answer a dead session with
    /// `missingSet` NotAuthenticated rather than a fault) ends the session and fails with
    /// NotAuthenticated, so callers can retry on a new one.
    async fn retrieve(
        &self,
        kind: &str,
        paths: &[&str],
        object_set: &str,
    ) -> Result<Vec<ObjectContent>, VsphereError> {
        let mut prop_set = format!("<propSet><type>{}</type>", escape(kind));
        for p in paths {
            prop_set.push_str(&format!("<pathSet>{}</pathSet>", escape(p)));
        }
        prop_set.push_str("</propSet>");
        let spec = format!("<specSet>{prop_set}{object_set}</specSet>");
        let first = self
            .call(|sc| {
                let mut r = Request::new("RetrievePropertiesEx", &sc.property_collector);
                r.raw(&spec).raw(&format!(
                    "<options><maxObjects>{PAGE_OBJECTS}</maxObjects></options>"
                ));
                r
            })
            .await?;
        let mut out = Vec::new();
        let mut token = self.checked_page(&first, &mut out)?;
        check_total(out.len())?;
        // A page limit keeps a confused server from making us loop forever.
        let mut pages = 0u32;
        while let Some(t) = token {
            pages += 1;
            if pages > 100_000 {
                return Err(VsphereError::protocol(
                    "ContinueRetrievePropertiesEx",
                    "too many pages",
                ));
            }
            let next = self
                .call(|sc| {
                    let mut r =
                        Request::new("ContinueRetrievePropertiesEx", &sc.property_collector);
                    r.text("token", &t);
                    r
                })
                .await?;
            token = self.checked_page(&next, &mut out)?;
            check_total(out.len())?;
        }
        Ok(out)
    }

    fn checked_page(
        &self,
        response: &Node,
        out: &mut Vec<ObjectContent>,
    ) -> Result<Option<String>, VsphereError> {
        let page = read_page(response, out)?;
        if let Some(fault) = page.unauthenticated {
            if let Some(session) = self.current() {
                self.forget(&session);
            }
            return Err(VsphereError::Fault(fault));
        }
        Ok(page.token)
    }

    /// Polls a task until it ends, giving its result (a moref for CreateVM, a snapshot...)
    /// or its fault. `limit` bounds the wait.
    pub async fn wait_task(
        &self,
        task: &MoRef,
        operation: &'static str,
        limit: Duration,
    ) -> Result<Option<Node>, WaitError> {
        let deadline = http::tokio_deadline_after(tokio::time::Instant::now(), limit);
        let mut pause = TASK_POLL_FIRST;
        loop {
            let objs = self
                .retrieve_objects(
                    std::slice::from_ref(task),
                    "Task",
                    &["info.state", "info.error", "info.result"],
                )
                .await?;
            let info = objs.first().ok_or_else(|| {
                VsphereError::protocol("RetrievePropertiesEx", "task vanished while polled")
            })?;
            match info.text("info.state") {
                Some("success") => return Ok(info.props.get("info.result").cloned()),
                Some("error") => {
                    let fault = info
                        .props
                        .get("info.error")
                        .map(task_fault)
                        .unwrap_or_else(|| Fault {
                            name: "TaskError".into(),
                            message: format!("{operation} task failed without a fault"),
                            fields: Vec::new(),
                        });
                    return Err(VsphereError::Fault(fault).into());
                }
                Some("queued" | "running") | None => {}
                Some(other) => {
                    return Err(VsphereError::protocol(
                        "RetrievePropertiesEx",
                        format!("unknown task state '{other}'"),
                    )
                    .into())
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout { operation, limit });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(TASK_POLL_MAX);
        }
    }

    /// Calls a `*_Task` method and waits for the task.
    pub async fn run_task(
        &self,
        operation: &'static str,
        limit: Duration,
        build: impl Fn(&ServiceContent) -> Request,
    ) -> Result<Option<Node>, WaitError> {
        let node = self.call(build).await?;
        let task = node
            .child("returnval")
            .and_then(MoRef::from_node)
            .ok_or_else(|| VsphereError::protocol("task call", "no task in the answer"))?;
        self.wait_task(&task, operation, limit).await
    }
}

/// A task wait that failed or ran out of time.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Vsphere(#[from] VsphereError),
    #[error("{operation} did not finish within {limit:?}")]
    Timeout {
        operation: &'static str,
        limit: Duration,
    },
}

impl From<TransportError> for WaitError {
    fn from(e: TransportError) -> Self {
        Self::Vsphere(e.into())
    }
}

/// `LocalizedMethodFault` (a task's `info.error`): `<fault xsi:type=...>` + `localizedMessage`.
fn task_fault(val: &Node) -> Fault {
    let message = val.child_text("localizedMessage").unwrap_or("").to_owned();
    match val.child("fault") {
        Some(f) => Fault::from_detail(f, message),
        None => Fault {
            name: "TaskError".into(),
            message,
            fields: Vec::new(),
        },
    }
}

struct Page {
    token: Option<String>,
    /// A `missingSet` NotAuthenticated fault, if any property was withheld for that reason.
    unauthenticated: Option<Fault>,
}

/// Reads one RetrieveResult page into `out`.
fn read_page(response: &Node, out: &mut Vec<ObjectContent>) -> Result<Page, VsphereError> {
    let mut page = Page {
        token: None,
        unauthenticated: None,
    };
    // No returnval: nothing matched.
    let Some(rv) = response.child("returnval") else {
        return Ok(page);
    };
    for o in rv.children_named("objects") {
        let obj = o.child("obj").and_then(MoRef::from_node).ok_or_else(|| {
            VsphereError::protocol("RetrievePropertiesEx", "an object without a reference")
        })?;
        let mut props = HashMap::new();
        for p in o.children_named("propSet") {
            if let (Some(name), Some(val)) = (p.child_text("name"), p.child("val")) {
                props.insert(name.to_owned(), val.clone());
            }
        }
        // Other missing properties (NoPermission on one field...) are simply absent.
        for m in o.children_named("missingSet") {
            let fault = m.child("fault").map(task_fault);
            if let Some(f) = fault.filter(|f| f.name == "NotAuthenticated") {
                page.unauthenticated.get_or_insert(f);
            }
        }
        out.push(ObjectContent { obj, props });
    }
    page.token = rv
        .child_text("token")
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    Ok(page)
}

/// A listing collects at most this many objects across its pages: far above any real
/// inventory, and it bounds what a confused or hostile server can make us hold.
pub const MAX_OBJECTS: usize = 1_000_000;

fn check_total(n: usize) -> Result<(), VsphereError> {
    if n > MAX_OBJECTS {
        return Err(VsphereError::protocol(
            "ContinueRetrievePropertiesEx",
            format!("more than {MAX_OBJECTS} objects across the pages of one listing; refused"),
        ));
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_capped() {
        assert!(check_total(MAX_OBJECTS).is_ok());
        let e = check_total(MAX_OBJECTS + 1).unwrap_err().to_string();
        assert!(e.contains("1000000 objects"), "{e}");
    }

    #[test]
    fn sdk_url_is_appended_once() {
        let u = |s: &str| sdk_url(&url::Url::parse(s).unwrap()).to_string();
        assert_eq!(u("https://vc.example"), "https://vc.example/sdk");
        assert_eq!(u("https://vc.example:8443/"), "https://vc.example:8443/sdk");
        assert_eq!(u("https://vc.example/sdk"), "https://vc.example/sdk");
        assert_eq!(u("https://vc.example/sdk/?x=1"), "https://vc.example/sdk/");
    }

    #[test]
    fn pages_and_task_faults_are_read() {
        let body = br#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><token>t1</token><objects><obj type="Task">task-1</obj><propSet><name>info.state</name><val xsi:type="TaskInfoState">error</val></propSet><propSet><name>info.error</name><val xsi:type="LocalizedMethodFault"><fault xsi:type="InvalidPowerState"><requestedState>poweredOn</requestedState><existingState>poweredOn</existingState></fault><localizedMessage>already on</localizedMessage></val></propSet></objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;
        let Answer::Response(node) = soap::parse_answer(body).unwrap() else {
            panic!("a response")
        };
        let mut out = Vec::new();
        let page = read_page(&node, &mut out).unwrap();
        assert_eq!(page.token.as_deref(), Some("t1"));
        assert!(page.unauthenticated.is_none());
        assert_eq!(out[0].obj, MoRef::new("Task", "task-1"));
        assert_eq!(out[0].text("info.state"), Some("error"));
        let f = task_fault(&out[0].props["info.error"]);
        assert_eq!(f.name, "InvalidPowerState");
        assert_eq!(f.message, "already on");
        assert_eq!(f.field("existingState"), Some("poweredOn"));
    }
}
