//! Pod metadata from the kubelet's log file names, without asking the API server:
//! `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log` (the symlinks)
//! and `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log` (their
//! targets). Pod, namespace and container names cannot contain `_` (DNS names), which is
//! what makes the split unambiguous.

use crate::record::PodMeta;
use std::path::Path;

impl PodMeta {
    /// The metadata in `path`'s name, when it is a kubelet log file name.
    pub fn from_path(path: &Path) -> Option<PodMeta> {
        from_containers_name(path).or_else(|| from_pods_path(path))
    }

    /// [`PodMeta::from_path`], and for a `/var/log/containers` symlink also the pod UID
    /// from the `/var/log/pods` file it points to (the kubelet's links are absolute; a
    /// relative one is taken from the link's directory). A link that cannot be read
    /// leaves the UID out.
    pub fn from_file(path: &Path) -> Option<PodMeta> {
        let mut meta = PodMeta::from_path(path)?;
        if meta.pod_uid.is_none() {
            let target = crate::open::link_target(path).ok();
            meta.pod_uid = target
                .and_then(|t| from_pods_path(&t))
                .and_then(|t| t.pod_uid);
        }
        Some(meta)
    }
}

/// `<pod>_<namespace>_<container>-<id>.log`, the id being 64 hex digits (containerd,
/// CRI-O, Docker all use them).
fn from_containers_name(path: &Path) -> Option<PodMeta> {
    let name = path.file_name()?.to_str()?.strip_suffix(".log")?;
    let mut parts = name.splitn(3, '_');
    let (pod, namespace, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let (container, id) = rest.rsplit_once('-')?;
    let hex = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if pod.is_empty() || namespace.is_empty() || container.is_empty() || !hex {
        return None;
    }
    Some(PodMeta {
        namespace: namespace.into(),
        pod: pod.into(),
        container: container.into(),
        container_id: Some(id.into()),
        pod_uid: None,
    })
}

/// `.../pods/<namespace>_<pod>_<uid>/<container>/<n>.log` (or a rotated `<n>.log.<time>`).
fn from_pods_path(path: &Path) -> Option<PodMeta> {
    let name = path.file_name()?.to_str()?;
    let restart = name.split('.').next()?;
    if restart.is_empty() || !restart.bytes().all(|b| b.is_ascii_digit()) || !name.contains(".log")
    {
        return None;
    }
    let container_dir = path.parent()?;
    let pod_dir = container_dir.parent()?;
    if pod_dir.parent()?.file_name()? != "pods" {
        return None;
    }
    let container = container_dir.file_name()?.to_str()?;
    let mut parts = pod_dir.file_name()?.to_str()?.splitn(3, '_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if namespace.is_empty() || pod.is_empty() || uid.is_empty() || container.is_empty() {
        return None;
    }
    Some(PodMeta {
        namespace: namespace.into(),
        pod: pod.into(),
        container: container.into(),
        container_id: None,
        pod_uid: Some(uid.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3c1f6e8a9b2d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";

    #[test]
    fn from_path_should_read_the_containers_symlink_name() {
        let path =
            format!("/var/log/containers/payments-api-7d9f8-x2x9q_payments_api-server-{ID}.log");
        assert_eq!(
            PodMeta::from_path(Path::new(&path)),
            Some(PodMeta {
                namespace: "payments".into(),
                pod: "payments-api-7d9f8-x2x9q".into(),
                container: "api-server".into(),
                container_id: Some(ID.into()),
                pod_uid: None,
            })
        );
    }

    #[test]
    fn from_path_should_read_the_pods_directory_layout() {
        let path = "/var/log/pods/payments_payments-api-7d9f8-x2x9q_0b6e-11ef/api-server/3.log";
        assert_eq!(
            PodMeta::from_path(Path::new(path)),
            Some(PodMeta {
                namespace: "payments".into(),
                pod: "payments-api-7d9f8-x2x9q".into(),
                container: "api-server".into(),
                container_id: None,
                pod_uid: Some("0b6e-11ef".into()),
            })
        );
        let rotated = "/var/log/pods/ns_pod_uid/c/0.log.20240501-102030";
        assert_eq!(
            PodMeta::from_path(Path::new(rotated)).unwrap().container,
            "c"
        );
    }

    #[test]
    fn from_file_should_take_the_pod_uid_from_the_symlinks_target() {
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("pods/payments_api-0_0b6e-11ef/server");
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::create_dir_all(dir.path().join("containers")).unwrap();
        let absolute = dir
            .path()
            .join(format!("containers/api-0_payments_server-{ID}.log"));
        std::os::unix::fs::symlink(pods.join("0.log"), &absolute).unwrap();
        let relative = dir
            .path()
            .join(format!("containers/api-1_payments_server-{ID}.log"));
        std::os::unix::fs::symlink("../pods/payments_api-0_0b6e-11ef/server/1.log", &relative)
            .unwrap();
        for link in [&absolute, &relative] {
            let meta = PodMeta::from_file(link).unwrap();
            assert_eq!(meta.pod_uid.as_deref(), Some("0b6e-11ef"), "{link:?}");
            assert_eq!(meta.container_id.as_deref(), Some(ID), "{link:?}");
        }
        // Not a link, or a link elsewhere: no UID, the rest as from_path.
        let plain = dir
            .path()
            .join(format!("containers/api-2_payments_server-{ID}.log"));
        std::fs::write(&plain, "").unwrap();
        let elsewhere = dir
            .path()
            .join(format!("containers/api-3_payments_server-{ID}.log"));
        std::os::unix::fs::symlink("/var/log/app.log", &elsewhere).unwrap();
        for path in [&plain, &elsewhere] {
            let meta = PodMeta::from_file(path).unwrap();
            assert_eq!(meta, PodMeta::from_path(path).unwrap(), "{path:?}");
            assert_eq!(meta.pod_uid, None);
        }
    }

    #[test]
    fn from_path_should_ignore_other_names() {
        for path in [
            "/var/log/app.log",
            "/var/log/containers/a_b_c-notanid.log",
            "/var/log/containers/a_b_c.log",
            &format!("/var/log/containers/_b_c-{ID}.log"),
            &format!("/var/log/containers/a_b_c-{ID}.txt"),
            "/var/log/pods/ns_pod/c/0.log",
            "/var/log/other/ns_pod_uid/c/0.log",
            "/var/log/pods/ns_pod_uid/c/app.log",
        ] {
            assert_eq!(PodMeta::from_path(Path::new(path)), None, "{path}");
        }
    }
}
