//! The per-job registry credentials Secret, as upstream makes it: when the job has registry
//! credentials (`DOCKER_AUTH_CONFIG`, the runner user's Docker config, the payload's
//! `registry` entries), one `kubernetes.io/dockercfg` Secret holding all of them, named like
//! the pod, listed in the pod's image pull secrets. After the pod exists the Secret is owned
//! by it (an ownerReference), so the cluster's garbage collector removes it with the pod;
//! cleanup deletes it itself only when that update did not happen.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use runner_core::registry_auth::RegistryAuth;
use serde::Serialize;

/// The Secret type upstream uses (`api.SecretTypeDockercfg`).
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
/// The Secret's key (`api.DockerConfigKey`).
pub const DOCKERCFG_KEY: &str = ".dockercfg";

/// One registry's entry in `.dockercfg`: Docker's `AuthConfig` with its JSON names, empty
/// fields left out.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct AuthEntry<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    username: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    password: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    serveraddress: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    identitytoken: &'a str,
}

/// The `.dockercfg` document: each registry's server address to its login (a later entry
/// for the same address replaces an earlier one, as upstream's map does).
pub fn dockercfg(auths: &[RegistryAuth]) -> Vec<u8> {
    let entries: BTreeMap<&str, AuthEntry<'_>> = auths
        .iter()
        .map(|auth| {
            (
                auth.server_address.as_str(),
                AuthEntry {
                    username: &auth.username,
                    password: &auth.password,
                    serveraddress: &auth.server_address,
                    identitytoken: &auth.identity_token,
                },
            )
        })
        .collect();
    serde_json::to_vec(&entries).unwrap_or_default()
}

/// The Secret for `auths`, or `None` when there are none.
pub fn registry_secret(name: &str, namespace: &str, auths: &[RegistryAuth]) -> Option<Secret> {
    if auths.is_empty() {
        return None;
    }
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        type_: Some(DOCKERCFG_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            DOCKERCFG_KEY.to_string(),
            ByteString(dockercfg(auths)),
        )])),
        ..Secret::default()
    })
}

/// `secret` owned by `pod` (upstream's reference: no `controller`, no
/// `blockOwnerDeletion`); `None` when the pod has no uid yet.
pub fn owned_by(mut secret: Secret, pod: &Pod) -> Option<Secret> {
    let reference = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        ..OwnerReference::default()
    };
    secret.metadata.owner_references = Some(vec![reference]);
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(server: &str, username: &str, token: &str) -> RegistryAuth {
        RegistryAuth {
            path: server.to_string(),
            source: "test".into(),
            server_address: server.to_string(),
            username: username.to_string(),
            password: if username.is_empty() {
                String::new()
            } else {
                "pw".into()
            },
            identity_token: token.to_string(),
        }
    }

    #[test]
    fn the_dockercfg_maps_each_server_to_its_login_without_empty_fields() {
        let auths = [
            auth("registry.example.com:5000", "gitlab-ci-token", ""),
            auth("https://index.docker.io/v1/", "", "id-token"),
        ];
        let document: serde_json::Value = serde_json::from_slice(&dockercfg(&auths)).unwrap();
        assert_eq!(
            document,
            serde_json::json!({
                "registry.example.com:5000": {"username": "gitlab-ci-token", "password": "pw",
                    "serveraddress": "registry.example.com:5000"},
                "https://index.docker.io/v1/": {"serveraddress": "https://index.docker.io/v1/",
                    "identitytoken": "id-token"},
            })
        );
    }

    #[test]
    fn no_credentials_no_secret_and_the_owner_is_the_pod() {
        assert!(registry_secret("n", "ns", &[]).is_none());
        let secret = registry_secret("n", "ns", &[auth("r.example", "u", "")]).unwrap();
        assert_eq!(secret.type_.as_deref(), Some(DOCKERCFG_TYPE));
        assert!(secret.data.as_ref().unwrap().contains_key(DOCKERCFG_KEY));
        let mut pod = Pod::default();
        assert!(owned_by(secret.clone(), &pod).is_none());
        pod.metadata.name = Some("p".into());
        pod.metadata.uid = Some("u-1".into());
        let owned = owned_by(secret, &pod).unwrap();
        let reference = &owned.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (
                reference.kind.as_str(),
                reference.name.as_str(),
                reference.uid.as_str()
            ),
            ("Pod", "p", "u-1")
        );
        assert_eq!(reference.controller, None);
        assert_eq!(reference.block_owner_deletion, None);
    }
}
