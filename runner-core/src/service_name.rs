//! Service image names as upstream's `helpers/container/services` splits them: the image path
//! without its tag or registry port, and the host names a service is reachable by by default,
//! shared by the executors that start services (Docker, Kubernetes).

/// A service image name split as upstream's `SplitNameAndVersion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    /// The image path with its registry host but without the registry's port.
    pub service: String,
    /// The tag, else the digest (`@sha256:...`), else `latest`.
    pub version: String,
    /// What is pulled: the name as given, `:latest` added when it has no tag or digest.
    pub image_name: String,
    /// `service` with `/` as `__`, and with `/` as `-` when that differs.
    pub aliases: Vec<String>,
}

/// Upstream's `SplitNameAndVersion`.
pub fn split_name_and_version(description: &str) -> ServiceName {
    let (name, digest) = match description.split_once('@') {
        Some((name, digest)) => (name, Some(format!("@{digest}"))),
        None => (description, None),
    };
    let (without_version, tag) = match (name.rfind(':'), name.rfind('/')) {
        (Some(colon), slash) if slash.is_none_or(|slash| colon > slash) => {
            (&name[..colon], Some(&name[colon + 1..]))
        }
        _ => (name, None),
    };
    // A registry port (`host:5000/...`) is not part of the service name.
    let service = match without_version.split_once('/') {
        Some((host, path)) => match host.rsplit_once(':') {
            Some((bare, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{bare}/{path}")
            }
            _ => without_version.to_string(),
        },
        None => without_version.to_string(),
    };
    let (version, image_name) = match (tag, &digest) {
        (Some(tag), _) if !tag.is_empty() => (tag.to_string(), description.to_string()),
        (_, Some(digest)) => (digest.clone(), description.to_string()),
        _ => ("latest".to_string(), format!("{without_version}:latest")),
    };
    let mut aliases = vec![service.replace('/', "__")];
    let dashed = service.replace('/', "-");
    if dashed != aliases[0] {
        aliases.push(dashed);
    }
    ServiceName {
        service,
        version,
        image_name,
        aliases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's own table (`helpers/container/services/test`), a sample of each shape.
    #[test]
    fn service_names_split_as_upstreams() {
        let digest = "@sha256:123456789012345678901234567890123456789012345678901234567890abcd";
        for (description, image, service, version, alias, alternative) in [
            (
                "service",
                "service:latest",
                "service",
                "latest",
                "service",
                "",
            ),
            (
                "service:version",
                "service:version",
                "service",
                "version",
                "service",
                "",
            ),
            (
                "namespace/service",
                "namespace/service:latest",
                "namespace/service",
                "latest",
                "namespace__service",
                "namespace-service",
            ),
            (
                "domain.tld:8080/namespace/service:version",
                "domain.tld:8080/namespace/service:version",
                "domain.tld/namespace/service",
                "version",
                "domain.tld__namespace__service",
                "domain.tld-namespace-service",
            ),
            (
                "subdomain.domain.tld:8080/service",
                "subdomain.domain.tld:8080/service:latest",
                "subdomain.domain.tld/service",
                "latest",
                "subdomain.domain.tld__service",
                "subdomain.domain.tld-service",
            ),
        ] {
            let split = split_name_and_version(description);
            assert_eq!(split.image_name, image, "{description}");
            assert_eq!(split.service, service, "{description}");
            assert_eq!(split.version, version, "{description}");
            assert_eq!(split.aliases[0], alias, "{description}");
            assert_eq!(
                split.aliases.get(1).map(String::as_str).unwrap_or(""),
                alternative
            );
        }
        let pinned = split_name_and_version(&format!("domain.tld:8080/service{digest}"));
        assert_eq!(pinned.service, "domain.tld/service");
        assert_eq!(pinned.version, digest);
        assert_eq!(
            pinned.image_name,
            format!("domain.tld:8080/service{digest}")
        );
    }
}
