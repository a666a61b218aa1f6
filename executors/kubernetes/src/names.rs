//! Names in the job pod, as upstream gives them: label values sanitised, generated object
//! names of at most 63 characters, the service containers' names, and the `127.0.0.1` host
//! alias entry that makes services reachable by their names (all containers of a pod share
//! its network, so services are on localhost).

use std::collections::{BTreeMap, HashSet};

use rand::Rng;
use runner_core::job::Image;
use runner_core::service_name::split_name_and_version;

/// The longest generated object name.
pub const MAX_NAME_LENGTH: usize = 63;
/// Random characters after the base of a generated name.
pub const NAME_SUFFIX_LENGTH: usize = 8;
/// The prefix of unnamed service containers (`svc-0`, `svc-1`, …).
pub const SERVICE_CONTAINER_PREFIX: &str = "svc-";

/// A label value as Kubernetes accepts it: characters outside `[A-Za-z0-9._-]` become `_`,
/// `-`, `_` and `.` are trimmed from both ends, then it is cut to 63 bytes and trimmed again.
pub fn sanitize_label(value: &str) -> String {
    let mapped: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trim = |text: &str| text.trim_matches(['-', '_', '.']).to_string();
    let mut value = trim(&mapped);
    // Only ASCII is left, so any byte is a character boundary.
    value.truncate(MAX_NAME_LENGTH);
    trim(&value)
}

/// `<base cut to 54>-<8 random [a-z0-9]>`: the pod's and the per-job secret's names.
pub fn generate_name(base: &str, rng: &mut impl Rng) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let keep = MAX_NAME_LENGTH - NAME_SUFFIX_LENGTH - 1;
    let base = base.get(..keep).unwrap_or(base);
    let suffix: String = (0..NAME_SUFFIX_LENGTH)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect();
    format!("{base}-{suffix}")
}

fn is_label_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    let edge = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    !bytes.is_empty()
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|byte| edge(byte) || *byte == b'-')
}

/// A DNS-1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(name: &str) -> bool {
    name.len() <= 63 && is_label_part(name)
}

/// A DNS-1123 subdomain, with the API machinery's messages (joined by `, `) when it is not.
pub fn validate_dns1123_subdomain(name: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    if name.len() > 253 {
        errors.push("must be no more than 253 characters".to_string());
    }
    if !name.split('.').all(is_label_part) {
        errors.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join(", "))
    }
}

/// The container name of each service, in order (configured services first, then the
/// job's; entries without a name are skipped by the caller): the first of its aliases that
/// is a DNS-1123 label and that no earlier service took, else `svc-<n>` with one counter for
/// all unnamed services. An alias that was looked at is taken even when it was not valid.
pub fn service_container_names<'a>(services: impl IntoIterator<Item = &'a Image>) -> Vec<String> {
    let mut used: HashSet<String> = HashSet::new();
    let mut unnamed = 0usize;
    let mut names = Vec::new();
    for service in services {
        let mut chosen = None;
        for alias in service.aliases() {
            if !used.insert(alias.to_string()) {
                continue;
            }
            if is_dns1123_label(alias) {
                chosen = Some(alias.to_string());
                break;
            }
        }
        names.push(chosen.unwrap_or_else(|| {
            let name = format!("{SERVICE_CONTAINER_PREFIX}{unnamed}");
            unnamed += 1;
            name
        }));
    }
    names
}

/// Upstream's `dns.MakeRFC1123Compatible`: lower case, only `a-z`, `0-9` and `-`, no leading
/// character other than a letter or digit, at most 63 characters.
pub fn rfc1123_compatible(name: &str) -> String {
    let kept: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .collect();
    kept.trim_start_matches('-')
        .chars()
        .take(MAX_NAME_LENGTH)
        .collect()
}

/// One Kubernetes Service upstream makes for an image that declares `ports` (the web IDE's
/// session proxy): its base name (a random suffix follows) and its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyService {
    /// The RFC 1123 form of the alias; each port is named `<base>-<number>`.
    pub base: String,
    /// The port numbers, each its own target port.
    pub ports: Vec<i32>,
}

/// The Services for the images with `ports`: one per alias of the image; without aliases,
/// `build` for the build image and `proxy-<container>` for a service. `images` pairs each
/// container name with its image. A later image with the same alias replaces the earlier, as
/// upstream's map does.
pub fn proxy_services<'a>(
    images: impl IntoIterator<Item = (&'a str, &'a Image)>,
) -> Vec<ProxyService> {
    let mut by_alias: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (container, image) in images {
        let ports: Vec<i32> = image
            .ports
            .iter()
            .filter_map(|port| i32::try_from(port.number).ok())
            .collect();
        if ports.is_empty() {
            continue;
        }
        let mut aliases: Vec<String> = image.aliases().into_iter().map(str::to_string).collect();
        if aliases.is_empty() {
            aliases.push(if container == crate::pod::BUILD_CONTAINER {
                container.to_string()
            } else {
                format!("proxy-{container}")
            });
        }
        for alias in aliases {
            by_alias.insert(alias, ports.clone());
        }
    }
    by_alias
        .into_iter()
        .map(|(alias, ports)| ProxyService {
            base: rfc1123_compatible(&alias),
            ports,
        })
        .collect()
}

/// The host names of the `127.0.0.1` host alias entry: for each service without `ports`, the
/// default names of its image that are valid DNS subdomains, then its own aliases, each of
/// which must be valid (upstream's error otherwise). `None` when there are none.
pub fn services_host_alias<'a>(
    services: impl IntoIterator<Item = &'a Image>,
) -> Result<Option<Vec<String>>, String> {
    let mut hostnames = Vec::new();
    for service in services {
        if !service.ports.is_empty() {
            continue;
        }
        let split = split_name_and_version(&service.name);
        hostnames.extend(
            split
                .aliases
                .into_iter()
                .filter(|alias| validate_dns1123_subdomain(alias).is_ok()),
        );
        for alias in service.aliases() {
            validate_dns1123_subdomain(alias).map_err(|reason| {
                format!(
                    "provided host alias {alias} for service {} is invalid DNS. {reason}",
                    service.name
                )
            })?;
            hostnames.push(alias.to_string());
        }
    }
    Ok((!hostnames.is_empty()).then_some(hostnames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn service(name: &str, alias: &str) -> Image {
        Image {
            name: name.into(),
            alias: alias.into(),
            ..Image::default()
        }
    }

    #[test]
    fn labels_are_sanitised_as_upstreams() {
        assert_eq!(sanitize_label("group/sub project"), "group_sub_project");
        assert_eq!(sanitize_label("-_.value._-"), "value");
        assert_eq!(sanitize_label("émoji✓"), "moji");
        let long = format!("{}-tail", "a".repeat(62));
        assert_eq!(sanitize_label(&long), "a".repeat(62));
        assert_eq!(sanitize_label(""), "");
    }

    #[test]
    fn generated_names_fit_in_63_characters() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let base = "runner-abcdefgh-project-1234567890-concurrent-1234567890-extra";
        let name = generate_name(base, &mut rng);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(&base[..54]));
        let suffix = &name[55..];
        assert!(suffix
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit()));
        let short = generate_name("runner-x-project-1-concurrent-0", &mut rng);
        assert_eq!(short.len(), "runner-x-project-1-concurrent-0".len() + 9);
    }

    #[test]
    fn dns_names_are_checked_as_the_api_machinery_does() {
        for valid in ["valid-dns", "1.1.1.1", "a.b.c", "c-1.p", "a---b"] {
            assert!(validate_dns1123_subdomain(valid).is_ok(), "{valid}");
        }
        for invalid in ["__invalid", "A.B", "A_B--C", "", "a..b", "-a"] {
            assert!(validate_dns1123_subdomain(invalid).is_err(), "{invalid:?}");
        }
        let long = format!("long-{}", "a".repeat(300));
        assert_eq!(
            validate_dns1123_subdomain(&long).unwrap_err(),
            "must be no more than 253 characters"
        );
        assert!(is_dns1123_label("svc-0"));
        assert!(!is_dns1123_label("my.service"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn service_containers_take_their_first_free_valid_alias_else_a_counter() {
        let services = [
            service("postgres:16", "db"),
            service("redis", ""),
            service("mysql", "db,my.sql other"),
            service("nginx", "Bad_Alias"),
            service("memcached", "db"),
        ];
        assert_eq!(
            service_container_names(&services),
            ["db", "svc-0", "other", "svc-1", "svc-2"]
        );
    }

    #[test]
    fn services_get_their_default_names_and_aliases_on_localhost() {
        let mut with_ports = service("webide/proxy", "ignored_alias");
        with_ports.ports = vec![runner_core::job::Port::default()];
        let services = [
            service("tutum/wordpress:5", "wp"),
            service("registry.example.com:5000/team/cache", ""),
            with_ports,
        ];
        assert_eq!(
            services_host_alias(&services).unwrap().unwrap(),
            ["tutum-wordpress", "wp", "registry.example.com-team-cache"]
        );
        assert_eq!(services_host_alias(&[]).unwrap(), None);
        assert!(services_host_alias(&[service("redis", "Not_DNS")])
            .unwrap_err()
            .starts_with("provided host alias Not_DNS for service redis is invalid DNS. a lowercase RFC 1123 subdomain"));
    }

    #[test]
    fn images_with_ports_get_a_service_per_alias_named_as_upstream_names_them() {
        let port = |number| runner_core::job::Port {
            number,
            ..runner_core::job::Port::default()
        };
        let mut build = Image {
            name: "alpine".into(),
            ports: vec![port(8080)],
            ..Image::default()
        };
        let mut webide = Image {
            name: "registry.example/webide:1".into(),
            alias: "IDE_Proxy,second".into(),
            ports: vec![port(80), port(443)],
            ..Image::default()
        };
        let unnamed = Image {
            name: "redis".into(),
            ports: vec![port(6379)],
            ..Image::default()
        };
        let plain = Image {
            name: "postgres".into(),
            ..Image::default()
        };
        let services = proxy_services([
            ("build", &build),
            ("svc-0", &webide),
            ("svc-1", &unnamed),
            ("svc-2", &plain),
        ]);
        let named: Vec<(&str, &[i32])> = services
            .iter()
            .map(|service| (service.base.as_str(), service.ports.as_slice()))
            .collect();
        assert_eq!(
            named,
            // By alias, as given (upper case sorts first).
            [
                ("ideproxy", &[80, 443][..]),
                ("build", &[8080][..]),
                ("proxy-svc-1", &[6379][..]),
                ("second", &[80, 443][..]),
            ]
        );
        build.ports.clear();
        webide.ports.clear();
        assert!(proxy_services([("build", &build), ("svc-0", &webide)]).is_empty());
        assert_eq!(rfc1123_compatible("--My.Host_1"), "myhost1");
        assert_eq!(rfc1123_compatible(&"a".repeat(70)).len(), 63);
    }
}
