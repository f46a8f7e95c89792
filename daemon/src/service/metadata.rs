//! A domain's title, description and tags: libvirt's `<title>`, `<description>`, and the tags
//! as one element of ours inside `<metadata>` (whose other content belongs to other
//! applications and is kept verbatim). Persisted in the definition.

use novacron_domain::{DomainConfig, Error};
use serde::{Deserialize, Serialize};

use super::domain::Definition;
use super::events::EventKind;
use super::jobs::Job;
use super::Service;

/// Our namespace inside `<metadata>`.
pub const TAGS_NAMESPACE: &str = "https://novacron.dev/xmlns/tags/1";
const OPEN: &str = "<novacron:tags xmlns:novacron=\"https://novacron.dev/xmlns/tags/1\">";
const CLOSE: &str = "</novacron:tags>";

const MAX_TITLE: usize = 256;
const MAX_DESCRIPTION: usize = 16 << 10;
const MAX_TAGS: usize = 64;
const MAX_TAG: usize = 64;

/// What a set-metadata request changes: `None` leaves a field as it is; an empty title or
/// description removes it; `tags` replaces the whole set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// A domain's metadata as the faces show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub tags: Vec<String>,
}

impl Metadata {
    pub fn of(config: &DomainConfig) -> Metadata {
        Metadata {
            title: config.title.clone(),
            description: config.description.clone(),
            tags: tags(config.metadata.as_deref()),
        }
    }
}

/// The tags recorded in a `<metadata>` body (none when it holds no element of ours).
pub fn tags(metadata: Option<&str>) -> Vec<String> {
    let Some(m) = metadata else {
        return Vec::new();
    };
    let Some(start) = m.find(OPEN).map(|i| i + OPEN.len()) else {
        return Vec::new();
    };
    let Some(end) = m[start..].find(CLOSE).map(|i| i + start) else {
        return Vec::new();
    };
    m[start..end]
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `metadata` carries tag `tag` (no allocation: lists filter with it).
pub fn has_tag(metadata: Option<&str>, tag: &str) -> bool {
    let Some(m) = metadata else {
        return false;
    };
    let Some(start) = m.find(OPEN).map(|i| i + OPEN.len()) else {
        return false;
    };
    m[start..]
        .find(CLOSE)
        .is_some_and(|end| m[start..start + end].split(',').any(|t| t == tag))
}

/// `metadata` with our element replaced by `tags` (removed when there are none).
fn with_tags(metadata: Option<&str>, tags: &[String]) -> Option<String> {
    let mut rest = metadata.unwrap_or_default().to_owned();
    if let Some(start) = rest.find(OPEN) {
        if let Some(end) = rest[start..].find(CLOSE) {
            rest.replace_range(start..start + end + CLOSE.len(), "");
        }
    }
    if !tags.is_empty() {
        rest.push_str(OPEN);
        rest.push_str(&tags.join(","));
        rest.push_str(CLOSE);
    }
    (!rest.trim().is_empty()).then_some(rest)
}

/// Checks a change; the error names the field and what is wrong.
fn check(change: &MetadataChange) -> Result<(), Error> {
    let field = |name: &str, v: &str, max: usize, one_line: bool| {
        if v.len() > max {
            return Err(Error::InvalidConfig(format!("{name}: at most {max} bytes")));
        }
        if v.chars()
            .any(|c| (one_line && c == '\n') || (c.is_control() && c != '\n' && c != '\t'))
        {
            return Err(Error::InvalidConfig(format!(
                "{name}: control characters{} are not allowed",
                if one_line { " and newlines" } else { "" }
            )));
        }
        Ok(())
    };
    if let Some(t) = &change.title {
        field("title", t, MAX_TITLE, true)?;
    }
    if let Some(d) = &change.description {
        field("description", d, MAX_DESCRIPTION, false)?;
    }
    if let Some(tags) = &change.tags {
        if tags.len() > MAX_TAGS {
            return Err(Error::InvalidConfig(format!("tags: at most {MAX_TAGS}")));
        }
        for (i, tag) in tags.iter().enumerate() {
            check_tag(tag).map_err(|why| Error::InvalidConfig(format!("tags[{i}]: {why}")))?;
        }
    }
    Ok(())
}

/// A tag: 1 to 64 of `A-Z a-z 0-9 . _ - :` (so it is safe in XML, URLs and the list).
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() || tag.len() > MAX_TAG {
        return Err(format!("must be 1 to {MAX_TAG} characters"));
    }
    match tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
    {
        Some(c) => Err(format!("'{c}' is not allowed (use A-Z a-z 0-9 . _ - :)")),
        None => Ok(()),
    }
}

impl Service {
    /// Changes the title, description or tags in the persistent definition (a running guest
    /// shows them once it restarts; lists filter by the definition at once). The trust the
    /// definition was accepted under is kept: metadata names no host file.
    pub async fn set_metadata(
        &self,
        name: &str,
        change: MetadataChange,
    ) -> Result<Metadata, Error> {
        check(&change)?;
        let inner = &self.inner;
        let h = inner.handle(name)?;
        // The definition is read and written under the domain's job, on this handle only: a
        // concurrent undefine or redefine is never undone by a stale copy (and an undefined
        // domain is not brought back: `begin` says not found once the handle is gone).
        let _job = h.begin(Job::Define, inner.config.job_wait()).await?;
        let definition = h.definition();
        if !definition.persistent {
            return Err(Error::InvalidConfig(format!(
                "domain '{name}' is transient: it has no definition to keep metadata in"
            )));
        }
        let mut config = definition.config.config().clone();
        let blank = |s: String| (!s.is_empty()).then_some(s);
        if let Some(t) = change.title {
            config.title = blank(t);
        }
        if let Some(d) = change.description {
            config.description = blank(d);
        }
        if let Some(mut tags) = change.tags {
            tags.sort();
            tags.dedup();
            config.metadata = with_tags(config.metadata.as_deref(), &tags);
        }
        let trust = definition.trust;
        let validated = inner.prepare(config, Some(definition))?;
        let metadata = Metadata::of(validated.config());
        inner
            .definitions
            .save(validated.config(), trust)
            .await
            .map_err(|e| Error::Io {
                action: "write the definition",
                path: inner.paths.definition(name).display().to_string(),
                message: e.to_string(),
            })?;
        h.set_definition(Definition {
            config: validated,
            persistent: true,
            trust,
        });
        inner
            .events
            .publish(name, EventKind::Defined { persistent: true });
        Ok(metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_kept_beside_other_applications_metadata() {
        let other = "<app:x xmlns:app=\"urn:a\">keep</app:x>";
        let m = with_tags(Some(other), &["web".into(), "prod".into()]).unwrap();
        assert!(m.starts_with(other), "{m}");
        assert_eq!(tags(Some(&m)), ["web", "prod"]);
        assert!(has_tag(Some(&m), "prod") && !has_tag(Some(&m), "pro"));
        let m = with_tags(Some(&m), &["db".into()]).unwrap();
        assert_eq!(tags(Some(&m)), ["db"]);
        assert_eq!(with_tags(Some(&m), &[]).as_deref(), Some(other));
        assert_eq!(with_tags(None, &[]), None);
    }

    #[test]
    fn bad_tags_and_titles_are_named() {
        assert!(check_tag("a b").unwrap_err().contains("' '"));
        assert!(check_tag("").is_err());
        let e = check(&MetadataChange {
            tags: Some(vec!["ok".into(), "<x>".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("tags[1]"), "{e}");
        let e = check(&MetadataChange {
            title: Some("two\nlines".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("title"), "{e}");
    }
}
