//! Image names such as `ghcr.io/ember-dev/ember-runtime:0.1.0`, split into
//! the repository and the tag. The index carries both forms: containerd's
//! importer names the image from the full reference, OCI layout tools from
//! the tag.

use std::fmt;

use crate::Error;

/// A `repository:tag` image name; digests (`@sha256:...`) are not names we build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    repository: String,
    tag: String,
}

impl ImageReference {
    /// Parses `name`, which must carry an explicit tag: an archive named
    /// `latest` by default would hide which version it holds.
    pub fn parse(name: &str) -> Result<Self, Error> {
        let fail = |reason| Error::ImageName { name: name.to_owned(), reason };
        if name.contains('@') {
            return Err(fail("digest references name no image to build; use repository:tag"));
        }
        // A ':' before the last '/' is a registry port, not a tag.
        let last_segment = name.rfind('/').map_or(0, |slash| slash + 1);
        let Some(colon) = name[last_segment..].rfind(':').map(|c| last_segment + c) else {
            return Err(fail("needs a tag, e.g. :0.1.0"));
        };
        let (repository, tag) = (&name[..colon], &name[colon + 1..]);
        if !is_valid_repository(repository) {
            return Err(fail("repository must be lowercase letters, digits, '.', '_', '-', '/' (and a registry port)"));
        }
        if !is_valid_tag(tag) {
            return Err(fail("tag must be 1-128 of letters, digits, '_', '.', '-', not starting with '.' or '-'"));
        }
        Ok(Self { repository: repository.to_owned(), tag: tag.to_owned() })
    }

    /// `registry/path/name` without the tag.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, e.g. `0.1.0`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The last path segment of the repository, e.g. `ember-runtime`: the
    /// image's title.
    pub fn short_name(&self) -> &str {
        self.repository.rsplit('/').next().unwrap_or(&self.repository)
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

// The distribution spec's grammar, loosely: enough to refuse typos early
// instead of failing at import or push time.
fn is_valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.split('/').all(|segment| {
            !segment.is_empty()
                && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:".contains(&b))
        })
}

fn is_valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_repository_and_tag() {
        let reference = ImageReference::parse("ghcr.io/ember-dev/ember-runtime:0.1.0").expect("valid name");
        assert_eq!(reference.repository(), "ghcr.io/ember-dev/ember-runtime");
        assert_eq!(reference.tag(), "0.1.0");
        assert_eq!(reference.short_name(), "ember-runtime");
        assert_eq!(reference.to_string(), "ghcr.io/ember-dev/ember-runtime:0.1.0");
    }

    #[test]
    fn a_registry_port_is_not_a_tag() {
        let reference = ImageReference::parse("localhost:5000/ember-api:dev").expect("valid name");
        assert_eq!(reference.repository(), "localhost:5000/ember-api");
        assert_eq!(reference.tag(), "dev");
        assert!(ImageReference::parse("localhost:5000/ember-api").is_err());
    }

    #[test]
    fn refuses_names_without_tag_digests_and_uppercase() {
        for name in ["ember-runtime", "ember-runtime:", "ember@sha256:abcd", "Ember/runtime:1", "a//b:1", "a:-x"] {
            assert!(ImageReference::parse(name).is_err(), "{name} should be refused");
        }
    }
}
