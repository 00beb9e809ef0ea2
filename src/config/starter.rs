//! The starter file `switchboard config init` writes: every section and key of the settings,
//! commented (`starter.toml`), with a new app id, tenant id and client secret, and an admin
//! token ready to be uncommented. It mirrors the development setup's parties and meeting, so
//! what a user tried without `--config` goes on working with the file.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const TEMPLATE: &str = include_str!("starter.toml");

/// A starter configuration: its text and the new app's ids.
pub struct Starter {
    pub text: String,
    pub app_id: String,
    pub tenant_id: String,
}

impl Starter {
    /// A starter with new ids and secrets (random, 256 bits each secret).
    pub fn new() -> Self {
        let app_id = uuid::Uuid::new_v4().to_string();
        let tenant_id = uuid::Uuid::new_v4().to_string();
        let text = TEMPLATE
            .replace("{{app_id}}", &app_id)
            .replace("{{tenant_id}}", &tenant_id)
            .replace("{{client_secret}}", &secret())
            .replace("{{admin_token}}", &secret());
        Starter {
            text,
            app_id,
            tenant_id,
        }
    }

    /// Writes the file, readable by its owner only (it holds the app's secret). An existing file
    /// is replaced only with `force` (else the error is `AlreadyExists`, the file untouched).
    pub fn write(&self, path: &Path, force: bool) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(0o600);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let mut file = options.open(path)?;
        file.write_all(self.text.as_bytes())?;
        file.sync_all()
    }
}

impl Default for Starter {
    fn default() -> Self {
        Self::new()
    }
}

fn secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_reflection::{ContainerFormat, Format, Registry, Tracer, TracerConfig};

    use super::*;
    use crate::config::Settings;

    #[test]
    fn the_starter_passes_the_check_with_its_new_app() {
        let starter = Starter::new();
        let s = Settings::from_toml(&starter.text).unwrap();
        assert_eq!(s.apps.len(), 1);
        assert_eq!(s.apps[0].app_id, starter.app_id);
        assert_eq!(s.apps[0].tenant_id, starter.tenant_id);
        assert_eq!(s.apps[0].client_secret.expose().len(), 43);
        assert!(!starter.text.contains("{{"), "a placeholder is left");
        let other = Starter::new();
        assert_ne!(other.app_id, starter.app_id);
        assert_ne!(other.text, starter.text);
    }

    #[test]
    fn the_starter_has_the_development_parties_and_meeting() {
        let starter = Settings::from_toml(&Starter::new().text).unwrap();
        let dev = Settings::development();
        let parties = |s: &Settings| {
            s.parties
                .iter()
                .map(|p| {
                    let p = p.clone();
                    (p.id, p.kind, p.behavior, p.answer_after_ms, p.display_name)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(parties(&starter), parties(&dev));
        let meetings = |s: &Settings| {
            s.meetings
                .iter()
                .map(|m| {
                    (
                        m.join_meeting_id.clone(),
                        m.passcode.clone(),
                        m.parties.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(meetings(&starter), meetings(&dev));
    }

    /// The starter with every commented-out key and section uncommented (prose stays comment).
    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    rest.to_string()
                }
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every key path the settings accept (`apps.roles`, `media.prompt_folder`, …), from the
    /// fields serde asks for.
    fn accepted(registry: &Registry, name: &str, prefix: &str, out: &mut BTreeSet<String>) {
        let Some(ContainerFormat::Struct(fields)) = registry.get(name) else {
            return;
        };
        for field in fields {
            let path = format!("{prefix}{}", field.name);
            let mut format = &field.value;
            while let Format::Option(inner) | Format::Seq(inner) = format {
                format = inner;
            }
            match format {
                Format::TypeName(t)
                    if matches!(registry.get(t), Some(ContainerFormat::Struct(_))) =>
                {
                    accepted(registry, t, &format!("{path}."), out)
                }
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    /// Every key path the file gives.
    fn given(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value {
                toml::Value::Table(t) => given(t, &format!("{path}."), out),
                toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                    for item in items {
                        given(item.as_table().unwrap(), &format!("{path}."), out);
                    }
                }
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    #[test]
    fn the_starter_names_every_section_and_key_the_settings_accept() {
        let text = uncommented(TEMPLATE);
        // Every uncommented key is a real one (the settings refuse unknown keys)...
        let _: Settings = toml::from_str(&text).unwrap();
        // ...and every key the settings accept is there.
        let mut tracer = Tracer::new(TracerConfig::default());
        // Enums first: each is traced until every variant is seen.
        tracer
            .trace_simple_type::<crate::config::Behavior>()
            .unwrap();
        tracer
            .trace_simple_type::<crate::domain::PartyKind>()
            .unwrap();
        tracer
            .trace_simple_type::<crate::store::Durability>()
            .unwrap();
        tracer
            .trace_simple_type::<crate::faults::ApiFaultKind>()
            .unwrap();
        tracer
            .trace_simple_type::<crate::faults::NotificationFaultKind>()
            .unwrap();
        tracer.trace_simple_type::<Settings>().unwrap();
        let registry = tracer.registry().unwrap();
        let mut want = BTreeSet::new();
        accepted(&registry, "Settings", "", &mut want);
        // Read only so that older files load; the starter does not offer it.
        want.remove("media.default_prompt_secs");
        let mut have = BTreeSet::new();
        given(&toml::from_str(&text).unwrap(), "", &mut have);
        let missing: Vec<_> = want.difference(&have).collect();
        assert!(missing.is_empty(), "the starter lacks {missing:?}");
        assert!(want.len() > 50, "the keys were traced: {want:?}");
    }
}
