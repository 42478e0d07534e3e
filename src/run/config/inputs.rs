//! The flags and the environment, with the precedence rule in one place: a flag wins over its
//! variable, which wins over the default; an empty variable counts as unset. Every setting is
//! read through its row of `run::settings`.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Env};
use crate::duration::Millis;
use crate::run::settings::{Given, Kind, Options, Setting};

pub struct Inputs<'a> {
    pub options: &'a Options,
    pub env: Env<'a>,
}

impl Inputs<'_> {
    /// An environment variable; empty counts as unset.
    pub fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// `MIGRUN_RELEASE`, else `GIT_SHA`.
    pub fn release(&self) -> Option<String> {
        self.var("MIGRUN_RELEASE").or_else(|| self.var("GIT_SHA"))
    }

    /// The setting's value as text: the flag's (`given` for a subcommand's own flag), else
    /// the variable's, else none (the default is the caller's: see [`Inputs::or_default`]).
    pub fn text_of(&self, setting: &Setting, given: Option<String>) -> Option<String> {
        let flag = given.or_else(|| self.options.text(setting)).filter(|v| !v.trim().is_empty());
        flag.or_else(|| setting.var.and_then(|var| self.var(var)))
    }

    /// A global setting's text.
    pub fn text(&self, setting: &Setting) -> Option<String> {
        self.text_of(setting, None)
    }

    /// The text, or the setting's default.
    pub fn or_default(&self, setting: &Setting, given: Option<String>) -> String {
        self.text_of(setting, given).or_else(|| setting.default.map(str::to_string)).unwrap_or_default()
    }

    /// A path setting, defaulted when it has a default.
    pub fn path(&self, setting: &Setting) -> Option<PathBuf> {
        self.options
            .path(setting)
            .or_else(|| setting.var.and_then(|var| self.var(var)).map(PathBuf::from))
            .or_else(|| setting.default.map(PathBuf::from))
    }

    /// A duration setting (`given`: a subcommand's own flag), defaulted.
    pub fn duration_of(&self, setting: &Setting, given: Option<String>) -> Result<Duration, ConfigError> {
        Ok(self.millis_of(setting, given)?.as_duration())
    }

    pub fn duration(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        self.duration_of(setting, None)
    }

    pub fn millis(&self, setting: &Setting) -> Result<Millis, ConfigError> {
        self.millis_of(setting, None)
    }

    fn millis_of(&self, setting: &Setting, given: Option<String>) -> Result<Millis, ConfigError> {
        debug_assert_eq!(setting.kind, Kind::Duration, "{} is not a duration", setting.flag);
        let value = self.or_default(setting, given);
        Millis::parse(&value).ok_or(ConfigError::Duration { flag: setting.flag, env: var_of(setting), value })
    }

    /// A switch: on when the flag is given, or the variable says so (1/0, true/false, yes/no, on/off).
    pub fn switch(&self, setting: &Setting) -> Result<bool, ConfigError> {
        if self.options.get(setting) == Some(&Given::On) {
            return Ok(true);
        }
        let Some(value) = setting.var.and_then(|var| self.var(var)) else { return Ok(false) };
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(setting, value, "true or false (1/0, yes/no, on/off)")),
        }
    }

    /// A whole-number setting, defaulted.
    pub fn count(&self, setting: &Setting, expected: &'static str) -> Result<u32, ConfigError> {
        let text = self.or_default(setting, None);
        text.trim().parse().map_err(|_| self.invalid(setting, text.clone(), expected))
    }

    /// The error for a value of `setting` that cannot be used.
    pub fn invalid(&self, setting: &Setting, value: String, expected: &'static str) -> ConfigError {
        ConfigError::Invalid { flag: setting.flag, env: var_of(setting), value, expected }
    }
}

fn var_of(setting: &Setting) -> &'static str {
    setting.var.unwrap_or("(no variable)")
}
