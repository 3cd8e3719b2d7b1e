//! Which containers a consistency step touches, decided from what the engine reported.

use crate::Container;

/// `voltool.backup.stop=true`: stop (or pause) this container too when a volume of its
/// Compose project / Swarm stack is backed up, although it does not mount it.
pub const LABEL_STOP: &str = "voltool.backup.stop";
/// `voltool.backup.pre=CMD`: run `sh -c CMD` in this container before the snapshot.
pub const LABEL_PRE: &str = "voltool.backup.pre";
/// `voltool.backup.post=CMD`: run `sh -c CMD` in this container after the snapshot.
pub const LABEL_POST: &str = "voltool.backup.post";

/// Whether a mount's driver is voltool's: the same name, with or without the `:latest` tag
/// (the engine names a managed plugin's volumes by the plugin's full reference).
fn same_driver(mount: &str, ours: &str) -> bool {
    let bare = |d: &str| d.strip_suffix(":latest").unwrap_or(d).to_owned();
    bare(mount) == bare(ours)
}

/// The containers among `all` that mount `volume` of the driver `driver`, in the engine's
/// order.
pub fn users_of(all: &[Container], volume: &str, driver: &str) -> Vec<Container> {
    all.iter()
        .filter(|c| c.volumes.iter().any(|m| m.name == volume && same_driver(&m.driver, driver)))
        .cloned()
        .collect()
}

/// The containers among `all` that do not use the volume but are labelled
/// `voltool.backup.stop=true` and belong to the Compose project or Swarm stack of one of its
/// `users` (a web server in front of a database, say).
pub fn companions_of(all: &[Container], users: &[Container]) -> Vec<Container> {
    let apps: Vec<&str> = users.iter().filter_map(Container::app).collect();
    all.iter()
        .filter(|c| !users.iter().any(|u| u.id == c.id))
        .filter(|c| c.labels.get(LABEL_STOP).is_some_and(|v| v.eq_ignore_ascii_case("true")))
        .filter(|c| c.app().is_some_and(|a| apps.contains(&a)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunState, VolumeMount};

    fn c(id: &str, vols: &[(&str, &str)], labels: &[(&str, &str)]) -> Container {
        Container {
            id: id.into(),
            name: id.into(),
            state: RunState::Running,
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            volumes: vols.iter().map(|(n, d)| VolumeMount { name: (*n).into(), driver: (*d).into() }).collect(),
            finished_at: None,
        }
    }

    #[test]
    fn users_are_found_by_volume_name_and_our_driver_only() {
        let all = vec![
            c("db", &[("data", "voltool:latest")], &[]),
            c("other-driver", &[("data", "local")], &[]),
            c("other-volume", &[("logs", "voltool:latest")], &[]),
            c("bare-name", &[("data", "voltool")], &[]),
            c("two", &[("logs", "voltool"), ("data", "voltool:latest")], &[]),
        ];
        let ids = |v: Vec<Container>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(users_of(&all, "data", "voltool:latest")), ["db", "bare-name", "two"]);
        assert_eq!(ids(users_of(&all, "data", "voltool")), ["db", "bare-name", "two"]);
        assert_eq!(ids(users_of(&all, "data", "voltool-e2e-1:latest")), Vec::<String>::new());
    }

    #[test]
    fn companions_need_the_label_and_the_same_app() {
        let project = ("com.docker.compose.project", "shop");
        let stop = (LABEL_STOP, "true");
        let all = vec![
            c("db", &[("data", "voltool")], &[project]),
            c("web", &[], &[project, stop]),
            c("web-unlabelled", &[], &[project]),
            c("other-app", &[], &[("com.docker.compose.project", "blog"), stop]),
            c("no-app", &[], &[stop]),
            c("stack-web", &[], &[("com.docker.stack.namespace", "shop"), ("voltool.backup.stop", "TRUE")]),
            c("says-false", &[], &[project, (LABEL_STOP, "false")]),
        ];
        let users = users_of(&all, "data", "voltool");
        let ids: Vec<String> = companions_of(&all, &users).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["web", "stack-web"]);
        assert!(companions_of(&all, &[]).is_empty(), "no users: nobody else is stopped");
    }
}
