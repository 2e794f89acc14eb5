//! Reloading the config of a running host (a change to the file, or
//! SIGHUP): which routes start, stop or restart. Pure; the daemon applies
//! it at the workers' batch boundaries.

use std::collections::BTreeSet;

use crate::config::Config;

/// What a new config changes, by route topic.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes that start.
    pub added: BTreeSet<String>,
    /// Routes that drain and stop.
    pub removed: BTreeSet<String>,
    /// Routes whose settings changed: they drain and start again with the
    /// new ones (plugin, config, limits, error policy, rollout, time).
    pub changed: BTreeSet<String>,
}

impl Changes {
    /// Whether the new config changes no route.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Everything but the routes and the declared topics: what only a restart
/// can change.
fn fixed(config: &Config) -> String {
    let mut rest = config.clone();
    rest.routes.clear();
    rest.topics.clear();
    format!("{rest:?}")
}

/// What going from `old` to `new` changes, or why it cannot happen without
/// a restart.
pub fn changes(old: &Config, new: &Config) -> Result<Changes, String> {
    if fixed(old) != fixed(new) {
        return Err(
            "only [[route]] and [[topic]] tables reload; a change to any other setting needs a restart"
                .into(),
        );
    }
    for topic in &old.topics {
        if let Some(t) = new.topics.iter().find(|t| t.name == topic.name)
            && t.partitions != topic.partitions
        {
            return Err(format!(
                "[[topic]] `{}` has {} partitions; a topic's partition count is fixed",
                topic.name, topic.partitions
            ));
        }
    }
    let mut changes = Changes::default();
    for route in &new.routes {
        match old.routes.iter().find(|r| r.topic == route.topic) {
            None => {
                changes.added.insert(route.topic.clone());
            }
            Some(was) if format!("{was:?}") != format!("{route:?}") => {
                changes.changed.insert(route.topic.clone());
            }
            Some(_) => {}
        }
    }
    for route in &old.routes {
        if !new.routes.iter().any(|r| r.topic == route.topic) {
            changes.removed.insert(route.topic.clone());
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `body` as the config file of one directory (paths in a config are
    /// resolved against its directory, so every version lives in the same).
    fn config(body: &str) -> Config {
        thread_local! {
            static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
        }
        DIR.with(|dir| {
            let path = dir.path().join("linecook.toml");
            std::fs::write(&path, format!("group = \"g\"\n{body}")).unwrap();
            Config::load(&path).unwrap()
        })
    }

    const A: &str = "[[route]]\ntopic = \"a\"\nplugin = \"p\"\n";
    const B: &str = "[[route]]\ntopic = \"b\"\nplugin = \"p\"\n";

    #[test]
    fn routes_are_added_removed_and_changed_by_topic() {
        let old = config(&format!("{A}{B}"));
        let new = config(&format!(
            "{A}[[route]]\ntopic = \"b\"\nplugin = \"q\"\n[[route]]\ntopic = \"c\"\nplugin = \"p\"\n"
        ));
        let c = changes(&old, &new).unwrap();
        assert_eq!(c.added, BTreeSet::from(["c".to_owned()]));
        assert_eq!(c.changed, BTreeSet::from(["b".to_owned()]));
        assert!(c.removed.is_empty());
        let c = changes(&new, &config(A)).unwrap();
        assert_eq!(c.removed, BTreeSet::from(["b".to_owned(), "c".to_owned()]));
        assert!(changes(&old, &old).unwrap().is_empty());
    }

    #[test]
    fn other_settings_and_partition_counts_need_a_restart() {
        let old = config(A);
        let err = changes(&old, &config(&format!("max_batch = 7\n{A}"))).unwrap_err();
        assert!(err.contains("needs a restart"), "{err}");
        let topics = |n: u32| config(&format!("[[topic]]\nname = \"t\"\npartitions = {n}\n{A}"));
        let err = changes(&topics(2), &topics(3)).unwrap_err();
        assert!(err.contains("fixed"), "{err}");
        // Declaring a new topic is fine.
        assert!(changes(&old, &topics(2)).unwrap().is_empty());
    }

    #[test]
    fn with_kafka_routes_reload_and_the_source_settings_do_not() {
        let kafka = |brokers: &str, routes: &str| {
            config(&format!(
                "[source]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\n{routes}"
            ))
        };
        let c = changes(&kafka("b:9092", A), &kafka("b:9092", &format!("{A}{B}"))).unwrap();
        assert_eq!(c.added, BTreeSet::from(["b".to_owned()]));
        let err = changes(&kafka("b:9092", A), &kafka("c:9092", A)).unwrap_err();
        assert!(err.contains("needs a restart"), "{err}");
    }
}
