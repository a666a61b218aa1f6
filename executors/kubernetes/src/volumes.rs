//! The user volumes of `[runners.kubernetes.volumes]` (`host_path`, `pvc`, `config_map`,
//! `secret`, `empty_dir`, `csi`, `nfs`) as upstream mounts them: the pod's volumes in that
//! kind order (host_path, secret, pvc, config_map, empty_dir, csi, nfs), every container's
//! mounts with their paths expanded by the job's variables, a PVC named twice once, an
//! `empty_dir` size limit that is not a quantity warned about and left out. Item maps are
//! emitted in key order (upstream's follow Go's map order, which is random).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, KeyToPath,
    NFSVolumeSource, PersistentVolumeClaimVolumeSource, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

/// The mount fields every kind has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawMount {
    /// `name`: the volume's (and for pvc / config_map / secret the object's) name.
    #[serde(default)]
    pub name: String,
    /// `mount_path`.
    #[serde(default)]
    pub mount_path: String,
    /// `sub_path`.
    #[serde(default)]
    pub sub_path: String,
    /// `read_only`.
    #[serde(default)]
    pub read_only: bool,
}

/// `[[runners.kubernetes.volumes.host_path]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawHostPath {
    /// The mount.
    #[serde(flatten)]
    pub mount: RawMount,
    /// `host_path`: the node's path (empty: `mount_path`).
    #[serde(default)]
    pub host_path: String,
    /// `mount_propagation`.
    #[serde(default)]
    pub mount_propagation: Option<String>,
}

/// `[[runners.kubernetes.volumes.pvc]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawPvc {
    /// The mount (its name is the claim's, expanded).
    #[serde(flatten)]
    pub mount: RawMount,
    /// `mount_propagation`.
    #[serde(default)]
    pub mount_propagation: Option<String>,
}

/// `[[runners.kubernetes.volumes.config_map]]` and `[[runners.kubernetes.volumes.secret]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawObjectVolume {
    /// The mount (its name is the object's).
    #[serde(flatten)]
    pub mount: RawMount,
    /// `items`: key to path.
    #[serde(default)]
    pub items: BTreeMap<String, String>,
}

/// `[[runners.kubernetes.volumes.empty_dir]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawEmptyDir {
    /// The mount (`read_only` is not used, as upstream).
    #[serde(flatten)]
    pub mount: RawMount,
    /// `medium` (`Memory` for a tmpfs).
    #[serde(default)]
    pub medium: String,
    /// `size_limit`: a quantity.
    #[serde(default)]
    pub size_limit: String,
    /// `mount_propagation`.
    #[serde(default)]
    pub mount_propagation: Option<String>,
}

/// `[[runners.kubernetes.volumes.csi]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawCsi {
    /// The mount.
    #[serde(flatten)]
    pub mount: RawMount,
    /// `driver`.
    #[serde(default)]
    pub driver: String,
    /// `fs_type`.
    #[serde(default)]
    pub fs_type: String,
    /// `volume_attributes`.
    #[serde(default)]
    pub volume_attributes: BTreeMap<String, String>,
}

/// `[[runners.kubernetes.volumes.nfs]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawNfs {
    /// The mount.
    #[serde(flatten)]
    pub mount: RawMount,
    /// `server`.
    #[serde(default)]
    pub server: String,
    /// `path`: the share.
    #[serde(default)]
    pub path: String,
}

/// `[runners.kubernetes.volumes]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UserVolumes {
    /// `host_path`.
    #[serde(default)]
    pub host_path: Vec<RawHostPath>,
    /// `pvc`.
    #[serde(default)]
    pub pvc: Vec<RawPvc>,
    /// `config_map`.
    #[serde(default)]
    pub config_map: Vec<RawObjectVolume>,
    /// `secret`.
    #[serde(default)]
    pub secret: Vec<RawObjectVolume>,
    /// `empty_dir`.
    #[serde(default)]
    pub empty_dir: Vec<RawEmptyDir>,
    /// `csi`.
    #[serde(default)]
    pub csi: Vec<RawCsi>,
    /// `nfs`.
    #[serde(default)]
    pub nfs: Vec<RawNfs>,
}

fn items(map: &BTreeMap<String, String>) -> Option<Vec<KeyToPath>> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(key, path)| KeyToPath {
                key: key.clone(),
                path: path.clone(),
                ..KeyToPath::default()
            })
            .collect()
    })
}

fn named(name: &str) -> Volume {
    Volume {
        name: name.to_string(),
        ..Volume::default()
    }
}

impl UserVolumes {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Every container's mounts of the user volumes, expanded with `expand`, in upstream's
    /// kind order.
    pub fn mounts(&self, expand: &dyn Fn(&str) -> String) -> Vec<VolumeMount> {
        let mount =
            |raw: &RawMount, name: String, read_only: bool, propagation: &Option<String>| {
                let sub_path = expand(&raw.sub_path);
                VolumeMount {
                    name,
                    mount_path: expand(&raw.mount_path),
                    sub_path: (!sub_path.is_empty()).then_some(sub_path),
                    read_only: read_only.then_some(true),
                    mount_propagation: propagation.clone().filter(|value| !value.is_empty()),
                    ..VolumeMount::default()
                }
            };
        let mut mounts = Vec::new();
        for volume in &self.host_path {
            let raw = &volume.mount;
            mounts.push(mount(
                raw,
                raw.name.clone(),
                raw.read_only,
                &volume.mount_propagation,
            ));
        }
        for volume in &self.secret {
            let raw = &volume.mount;
            mounts.push(mount(raw, raw.name.clone(), raw.read_only, &None));
        }
        for volume in &self.pvc {
            let raw = &volume.mount;
            mounts.push(mount(
                raw,
                expand(&raw.name),
                raw.read_only,
                &volume.mount_propagation,
            ));
        }
        for volume in &self.config_map {
            let raw = &volume.mount;
            mounts.push(mount(raw, raw.name.clone(), raw.read_only, &None));
        }
        for volume in &self.empty_dir {
            let raw = &volume.mount;
            mounts.push(mount(
                raw,
                raw.name.clone(),
                false,
                &volume.mount_propagation,
            ));
        }
        for volume in &self.csi {
            let raw = &volume.mount;
            mounts.push(mount(raw, raw.name.clone(), raw.read_only, &None));
        }
        for volume in &self.nfs {
            let raw = &volume.mount;
            mounts.push(mount(raw, raw.name.clone(), raw.read_only, &None));
        }
        mounts
    }

    /// The pod's user volumes in upstream's kind order; `warnings` gets upstream's line for
    /// each `size_limit` that is not a quantity.
    pub fn volumes(
        &self,
        expand: &dyn Fn(&str) -> String,
        warnings: &mut Vec<String>,
    ) -> Vec<Volume> {
        let mut volumes = Vec::new();
        for volume in &self.host_path {
            let path = if volume.host_path.is_empty() {
                &volume.mount.mount_path
            } else {
                &volume.host_path
            };
            volumes.push(Volume {
                host_path: Some(HostPathVolumeSource {
                    path: path.clone(),
                    ..HostPathVolumeSource::default()
                }),
                ..named(&volume.mount.name)
            });
        }
        for volume in &self.secret {
            volumes.push(Volume {
                secret: Some(SecretVolumeSource {
                    secret_name: Some(volume.mount.name.clone()),
                    items: items(&volume.items),
                    ..SecretVolumeSource::default()
                }),
                ..named(&volume.mount.name)
            });
        }
        let mut claims: Vec<&str> = Vec::new();
        for volume in &self.pvc {
            // Upstream keys the duplicates by the unexpanded name.
            if claims.contains(&volume.mount.name.as_str()) {
                continue;
            }
            claims.push(&volume.mount.name);
            let name = expand(&volume.mount.name);
            volumes.push(Volume {
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: name.clone(),
                    ..PersistentVolumeClaimVolumeSource::default()
                }),
                ..named(&name)
            });
        }
        for volume in &self.config_map {
            volumes.push(Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: volume.mount.name.clone(),
                    items: items(&volume.items),
                    ..ConfigMapVolumeSource::default()
                }),
                ..named(&volume.mount.name)
            });
        }
        for volume in &self.empty_dir {
            let size_limit = match volume.size_limit.trim() {
                "" => None,
                text => match crate::quantity::Quantity::parse(text) {
                    Ok(_) => Some(Quantity(text.to_string())),
                    Err(error) => {
                        warnings.push(format!(
                            "invalid limit quantity {:?} for empty volume {:?}: {error}",
                            volume.size_limit, volume.mount.name
                        ));
                        None
                    }
                },
            };
            volumes.push(Volume {
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: (!volume.medium.is_empty()).then(|| volume.medium.clone()),
                    size_limit,
                }),
                ..named(&volume.mount.name)
            });
        }
        for volume in &self.csi {
            volumes.push(Volume {
                csi: Some(CSIVolumeSource {
                    driver: volume.driver.clone(),
                    fs_type: Some(volume.fs_type.clone()),
                    read_only: Some(volume.mount.read_only),
                    volume_attributes: (!volume.volume_attributes.is_empty())
                        .then(|| volume.volume_attributes.clone()),
                    ..CSIVolumeSource::default()
                }),
                ..named(&volume.mount.name)
            });
        }
        for volume in &self.nfs {
            volumes.push(Volume {
                nfs: Some(NFSVolumeSource {
                    path: volume.path.clone(),
                    server: volume.server.clone(),
                    read_only: volume.mount.read_only.then_some(true),
                }),
                ..named(&volume.mount.name)
            });
        }
        volumes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volumes() -> UserVolumes {
        toml::from_str(
            r#"
            [[host_path]]
            name = "docker"
            mount_path = "/var/run/docker.sock"
            read_only = true
            [[host_path]]
            name = "certs"
            mount_path = "/certs/$CI_JOB_ID"
            host_path = "/etc/certs"
            mount_propagation = "HostToContainer"
            [[pvc]]
            name = "cache-$CI_PROJECT_ID"
            mount_path = "/cache"
            [[pvc]]
            name = "cache-$CI_PROJECT_ID"
            mount_path = "/cache2"
            sub_path = "part"
            [[config_map]]
            name = "settings"
            mount_path = "/etc/settings"
            [config_map.items]
            "b.conf" = "b/conf"
            "a.conf" = "a.conf"
            [[secret]]
            name = "keys"
            mount_path = "/keys"
            read_only = true
            [[empty_dir]]
            name = "scratch"
            mount_path = "/scratch"
            medium = "Memory"
            size_limit = "1Gi"
            [[empty_dir]]
            name = "bad"
            mount_path = "/bad"
            size_limit = "lots"
            [[csi]]
            name = "csi"
            mount_path = "/csi"
            driver = "csi.example.com"
            [csi.volume_attributes]
            size = "1"
            [[nfs]]
            name = "share"
            mount_path = "/share"
            server = "nfs.example"
            path = "/exports"
            "#,
        )
        .unwrap()
    }

    fn expand(text: &str) -> String {
        text.replace("$CI_JOB_ID", "9")
            .replace("$CI_PROJECT_ID", "7")
    }

    #[test]
    fn volumes_come_in_upstreams_kind_order_with_names_and_sources() {
        let mut warnings = Vec::new();
        let volumes = volumes().volumes(&expand, &mut warnings);
        let names: Vec<&str> = volumes.iter().map(|volume| volume.name.as_str()).collect();
        assert_eq!(
            names,
            ["docker", "certs", "keys", "cache-7", "settings", "scratch", "bad", "csi", "share"]
        );
        let json = serde_json::to_value(&volumes).unwrap();
        assert_eq!(json[0]["hostPath"]["path"], "/var/run/docker.sock");
        assert_eq!(json[1]["hostPath"]["path"], "/etc/certs");
        assert_eq!(json[2]["secret"]["secretName"], "keys");
        assert_eq!(json[3]["persistentVolumeClaim"]["claimName"], "cache-7");
        assert_eq!(
            json[4]["configMap"],
            serde_json::json!({"name": "settings", "items": [
                {"key": "a.conf", "path": "a.conf"}, {"key": "b.conf", "path": "b/conf"}]})
        );
        assert_eq!(
            json[5]["emptyDir"],
            serde_json::json!({"medium": "Memory", "sizeLimit": "1Gi"})
        );
        assert_eq!(json[6]["emptyDir"], serde_json::json!({}));
        assert_eq!(
            json[7]["csi"],
            serde_json::json!({"driver": "csi.example.com", "fsType": "", "readOnly": false,
                "volumeAttributes": {"size": "1"}})
        );
        assert_eq!(
            json[8]["nfs"],
            serde_json::json!({"server": "nfs.example", "path": "/exports"})
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("invalid limit quantity \"lots\" for empty volume \"bad\": "),
            "{warnings:?}"
        );
    }

    #[test]
    fn mounts_are_expanded_and_every_pvc_mount_stays() {
        let mounts = volumes().mounts(&expand);
        let json = serde_json::to_value(&mounts).unwrap();
        let paths: Vec<&str> = mounts
            .iter()
            .map(|mount| mount.mount_path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "/var/run/docker.sock",
                "/certs/9",
                "/keys",
                "/cache",
                "/cache2",
                "/etc/settings",
                "/scratch",
                "/bad",
                "/csi",
                "/share"
            ]
        );
        assert_eq!(json[0]["readOnly"], true);
        assert_eq!(json[1]["mountPropagation"], "HostToContainer");
        assert_eq!(json[4]["name"], "cache-7");
        assert_eq!(json[4]["subPath"], "part");
        assert!(json[3].get("subPath").is_none());
    }
}
