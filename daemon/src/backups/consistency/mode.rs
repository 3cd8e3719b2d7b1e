//! `backup-consistency=none|stop|pause|hooks|freeze`, comma-combined.

use std::fmt;

/// The consistency steps of a run; all false is `none`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    /// Run the `voltool.backup.pre`/`post` hooks.
    pub hooks: bool,
    /// Stop the containers (Swarm: scale their services to 0).
    pub stop: bool,
    /// Pause the containers (cgroup freezer).
    pub pause: bool,
    /// `FIFREEZE` the volume's filesystem around the snapshot.
    pub freeze: bool,
}

/// A `backup-consistency` value that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    #[error("unknown step {0:?}; valid: none, stop, pause, hooks, freeze (comma-combined, e.g. hooks,stop)")]
    Unknown(String),
    #[error("stop and pause exclude each other")]
    StopAndPause,
    #[error("none cannot be combined with other steps")]
    NoneAndMore,
    #[error("empty; valid: none, stop, pause, hooks, freeze")]
    Empty,
}

impl Mode {
    /// Parses `stop`, `hooks,stop`, `none`, ... (case-insensitive, spaces around commas).
    ///
    /// # Errors
    /// [`ModeError`].
    pub fn parse(s: &str) -> Result<Self, ModeError> {
        let words: Vec<String> = s.split(',').map(|w| w.trim().to_ascii_lowercase()).collect();
        if words.iter().all(String::is_empty) {
            return Err(ModeError::Empty);
        }
        let mut m = Mode::default();
        let mut none = false;
        for w in &words {
            match w.as_str() {
                "none" => none = true,
                "stop" => m.stop = true,
                "pause" => m.pause = true,
                "hooks" => m.hooks = true,
                "freeze" => m.freeze = true,
                other => return Err(ModeError::Unknown(other.to_owned())),
            }
        }
        if none && !m.is_none() {
            return Err(ModeError::NoneAndMore);
        }
        if m.stop && m.pause {
            return Err(ModeError::StopAndPause);
        }
        Ok(m)
    }

    pub fn is_none(self) -> bool {
        self == Mode::default()
    }

    /// Whether a step talks to the Docker engine (all but `freeze`).
    pub fn needs_engine(self) -> bool {
        self.hooks || self.stop || self.pause
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<&str> =
            [(self.hooks, "hooks"), (self.stop, "stop"), (self.pause, "pause"), (self.freeze, "freeze")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
        if steps.is_empty() { f.write_str("none") } else { f.write_str(&steps.join(",")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_combine_and_print_in_one_order() {
        for (text, shown) in [
            ("none", "none"),
            ("stop", "stop"),
            ("Stop , hooks", "hooks,stop"),
            ("freeze,pause", "pause,freeze"),
            ("hooks,stop,freeze", "hooks,stop,freeze"),
            ("hooks,hooks", "hooks"),
        ] {
            let m = Mode::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(m.to_string(), shown, "{text}");
            assert_eq!(Mode::parse(shown), Ok(m), "{shown} round-trips");
        }
        assert!(Mode::parse("none").expect("none").is_none());
        assert!(!Mode::parse("freeze").expect("freeze").needs_engine());
        assert!(Mode::parse("hooks").expect("hooks").needs_engine());
    }

    #[test]
    fn bad_modes_say_why() {
        assert_eq!(Mode::parse("stop,pause"), Err(ModeError::StopAndPause));
        assert_eq!(Mode::parse("none,stop"), Err(ModeError::NoneAndMore));
        assert_eq!(Mode::parse(""), Err(ModeError::Empty));
        assert_eq!(Mode::parse(" , "), Err(ModeError::Empty));
        assert_eq!(Mode::parse("stpo"), Err(ModeError::Unknown("stpo".into())));
        assert!(Mode::parse("snapshot").expect_err("unknown").to_string().contains("valid: none, stop"));
    }
}
